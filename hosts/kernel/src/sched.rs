//! Kernel threads and a preemptive round-robin scheduler for one CPU.
//!
//! The thread table is preallocated ([`MAX_THREADS`] slots), so [`wake`] never
//! allocates and is safe from an interrupt handler. The table sits in an
//! [`IrqMutex`]: interrupts are masked while it is held, which on one CPU is what
//! makes it exclusive (the spin lock inside keeps the structure honest for more CPUs,
//! though the switch below still assumes one). Slot 0 is the boot thread, slot 1 the
//! idle thread, which runs only when nothing else can.
//!
//! A switch saves the callee-saved registers and the stack pointer (`gk_switch`),
//! always with interrupts masked; the push_off state of the thread that leaves is
//! kept on its own stack across the switch ([`interrupts::save`]). The LAPIC timer
//! preempts a thread only when interrupts are on in it, so a thread that holds a
//! spin lock (every spin lock masks interrupts) is never preempted.

use alloc::boxed::Box;
use alloc::vec;
use core::arch::{asm, global_asm};
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use genpager::sync::{Scheduler, Token};

use crate::interrupts::{self, IrqGuard, IrqMutex, NoIrq};
use crate::time;

/// Threads at most, the boot and idle threads included.
pub const MAX_THREADS: usize = 32;
/// Bytes of stack of a spawned thread.
pub const STACK_SIZE: usize = 64 * 1024;
/// The boot thread's slot.
const BOOT: usize = 0;
/// The idle thread's slot.
const IDLE: usize = 1;

/// Names a spawned thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThreadId(usize);

impl ThreadId {
    /// The token genpager (and [`SCHEDULER`]) names this thread by.
    pub fn token(self) -> Token {
        Token(self.0)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Free,
    Runnable,
    Running,
    Blocked,
    /// Finished, its stack still to be freed by `join`.
    Exited,
}

struct Slot {
    state: State,
    name: &'static str,
    entry: Option<fn(usize)>,
    arg: usize,
    /// A wake not yet consumed by `block`.
    permit: bool,
    /// For `sleep_us`: the tick handler wakes the thread once `now_us` reaches it
    /// (0: no deadline).
    wake_at: u64,
    /// The thread waiting in `join` for this one.
    joiner: Option<usize>,
    stack: Option<Box<[u8]>>,
}

impl Slot {
    const FREE: Slot = Slot {
        state: State::Free,
        name: "",
        entry: None,
        arg: 0,
        permit: false,
        wake_at: 0,
        joiner: None,
        stack: None,
    };
}

struct Table {
    slots: [Slot; MAX_THREADS],
    current: usize,
}

impl Table {
    /// The next runnable thread after the current one, round robin (never idle).
    fn next_runnable(&self) -> Option<usize> {
        (1..MAX_THREADS)
            .map(|step| (self.current + step) % MAX_THREADS)
            .find(|&index| index != IDLE && self.slots[index].state == State::Runnable)
    }

    /// Makes thread `index` runnable if it sleeps, else leaves it a permit; returns
    /// whether it was asleep.
    fn wake(&mut self, index: usize) -> bool {
        let slot = &mut self.slots[index];
        match slot.state {
            State::Blocked => {
                slot.state = State::Runnable;
                slot.permit = true;
                WAKES.fetch_add(1, Ordering::Relaxed);
                true
            }
            State::Runnable | State::Running => {
                slot.permit = true;
                false
            }
            State::Free | State::Exited => false,
        }
    }
}

static TABLE: IrqMutex<Table> = IrqMutex::new(Table {
    slots: [const { Slot::FREE }; MAX_THREADS],
    current: BOOT,
});

/// Saved stack pointers, outside the table's lock: `gk_switch` writes the leaving
/// thread's after the lock is released (interrupts still masked).
static SAVED_RSP: [AtomicUsize; MAX_THREADS] = [const { AtomicUsize::new(0) }; MAX_THREADS];

static SLEEPS: AtomicU64 = AtomicU64::new(0);
static WAKES: AtomicU64 = AtomicU64::new(0);
static SWITCHES: AtomicU64 = AtomicU64::new(0);
static PREEMPTIONS: AtomicU64 = AtomicU64::new(0);
static IRQ_WAKES: AtomicU64 = AtomicU64::new(0);

global_asm!(
    // gk_switch(save: *mut usize, next_rsp: usize), System V: rdi, rsi.
    ".global gk_switch",
    "gk_switch:",
    "pushq %rbp",
    "pushq %rbx",
    "pushq %r12",
    "pushq %r13",
    "pushq %r14",
    "pushq %r15",
    "movq %rsp, (%rdi)",
    "movq %rsi, %rsp",
    "popq %r15",
    "popq %r14",
    "popq %r13",
    "popq %r12",
    "popq %rbx",
    "popq %rbp",
    "ret",
    // Where a new thread's first switch returns to: the stack is 16-byte aligned here.
    ".global gk_thread_start",
    "gk_thread_start:",
    "call {main}",
    "ud2",
    main = sym thread_main,
    options(att_syntax)
);

unsafe extern "sysv64" {
    /// Saves the callee-saved registers on the current stack, stores the stack
    /// pointer at `save`, switches to `next_rsp` and pops the next thread's registers.
    ///
    /// # Safety
    ///
    /// Interrupts masked; `save` valid for a write; `next_rsp` a stack saved by this
    /// function or built by `spawn`, of a thread not running.
    fn gk_switch(save: *mut usize, next_rsp: usize);
    /// The entry of a new thread (see `spawn`); never called directly.
    fn gk_thread_start();
}

/// Switches to the next runnable thread, or to idle, or stays. The caller has set
/// the current thread's state (Runnable to stay in the rotation, Blocked, Exited).
fn switch_away(mut table: IrqGuard<'_, Table>) {
    let current = table.current;
    let stays = current == IDLE || table.slots[current].state == State::Runnable;
    let next = match table.next_runnable() {
        Some(next) => next,
        None if stays => current,
        None => IDLE,
    };
    if next == current {
        if current != IDLE {
            table.slots[current].state = State::Running;
        }
        return;
    }
    if next != IDLE {
        table.slots[next].state = State::Running;
    }
    table.current = next;
    SWITCHES.fetch_add(1, Ordering::Relaxed);
    let save = SAVED_RSP[current].as_ptr();
    let next_rsp = SAVED_RSP[next].load(Ordering::Relaxed);
    // Masked across the switch: the lock goes, the masking stays.
    let masked = NoIrq::new();
    drop(table);
    let state = interrupts::save();
    // SAFETY: interrupts are masked (`masked`); `save` is this thread's slot of a
    // static; `next_rsp` was saved by `gk_switch` or built by `spawn` for `next`, which
    // is not running (one CPU, and `next != current`).
    unsafe { gk_switch(save, next_rsp) };
    // Running again: this thread's push_off state comes back.
    interrupts::restore(state);
    drop(masked);
}

/// The first Rust code of a new thread.
extern "sysv64" fn thread_main() -> ! {
    // The switch into this thread left one push_off held, to come undone here.
    interrupts::restore(interrupts::Saved::NEW_THREAD);
    let (entry, arg) = {
        let table = TABLE.lock();
        let slot = &table.slots[table.current];
        (slot.entry, slot.arg)
    };
    genpager::sync::Interrupts::enable(&interrupts::INTERRUPTS);
    if let Some(entry) = entry {
        entry(arg);
    }
    exit()
}

/// Ends the current thread.
fn exit() -> ! {
    let mut table = TABLE.lock();
    let current = table.current;
    table.slots[current].state = State::Exited;
    if let Some(joiner) = table.slots[current].joiner.take() {
        table.wake(joiner);
    }
    switch_away(table);
    unreachable!("an exited thread ran again");
}

/// Sets up the boot thread (slot 0, running on the firmware's stack) and the idle
/// thread. Call once, before interrupts are enabled.
pub fn init() {
    {
        let mut table = TABLE.lock();
        table.slots[BOOT].state = State::Running;
        table.slots[BOOT].name = "boot";
        table.current = BOOT;
    }
    let idle = spawn("idle", idle_loop, 0);
    assert_eq!(idle.0, IDLE);
    // Out of the rotation: picked only when nothing else is runnable.
    TABLE.lock().slots[IDLE].state = State::Runnable;
}

/// The idle thread: halts until an interrupt, runs whatever became runnable.
fn idle_loop(_: usize) {
    loop {
        // Look with interrupts masked, then `sti; hlt`: `sti` takes effect after the
        // next instruction, so a wake between the look and the halt still ends it.
        // SAFETY: masks interrupts; this thread holds no push_off (depth 0).
        unsafe { asm!("cli", options(nostack)) };
        let runnable = TABLE.lock().next_runnable().is_some();
        if runnable {
            // SAFETY: back to interrupts on, as this thread runs.
            unsafe { asm!("sti", options(nostack)) };
            yield_now();
        } else {
            // SAFETY: halts until the next interrupt, with interrupts on.
            unsafe { asm!("sti", "hlt", options(nostack)) };
        }
    }
}

/// Starts a thread running `entry(arg)` on a new 64 KiB stack; the thread ends when
/// `entry` returns. Panics when all [`MAX_THREADS`] slots are in use.
pub fn spawn(name: &'static str, entry: fn(usize), arg: usize) -> ThreadId {
    let mut stack = vec![0u8; STACK_SIZE].into_boxed_slice();
    let top = (stack.as_mut_ptr() as usize + STACK_SIZE) & !15;
    // What `gk_switch` pops: r15, r14, r13, r12, rbx, rbp, then the return address,
    // placed so the stack is 16-byte aligned after the `ret` into gk_thread_start.
    let frame = [0, 0, 0, 0, 0, 0, gk_thread_start as *const () as usize];
    let rsp = top - 8 * frame.len();
    // SAFETY: `rsp..top` lies inside `stack` (64 KiB), which is ours and aligned for
    // usize writes (`top` is 16-aligned, `rsp` 8 below a multiple of 8 words).
    unsafe { core::ptr::copy_nonoverlapping(frame.as_ptr(), rsp as *mut usize, frame.len()) };
    let mut table = TABLE.lock();
    let index = (0..MAX_THREADS)
        .find(|&index| index != BOOT && table.slots[index].state == State::Free)
        .expect("no free thread slot");
    SAVED_RSP[index].store(rsp, Ordering::Relaxed);
    table.slots[index] = Slot {
        state: State::Runnable,
        name,
        entry: Some(entry),
        arg,
        permit: false,
        wake_at: 0,
        joiner: None,
        stack: Some(stack),
    };
    ThreadId(index)
}

/// Waits (sleeping) until thread `id` has exited, then frees its slot and stack. One
/// joiner per thread (a second one would replace the first's wake-up).
pub fn join(id: ThreadId) {
    let me = current();
    assert_ne!(id.token(), me, "a thread cannot join itself");
    loop {
        let mut table = TABLE.lock();
        let slot = &mut table.slots[id.0];
        match slot.state {
            State::Exited => {
                let stack = slot.stack.take();
                *slot = Slot::FREE;
                drop(table);
                // Freed outside the table's lock: the heap takes its own.
                drop(stack);
                return;
            }
            State::Free => return,
            _ => {
                slot.joiner = Some(me.0);
                drop(table);
                SCHEDULER.block(me);
            }
        }
    }
}

/// Waits until every spawned thread (but idle and the caller; the boot thread never
/// exits, so it is not waited for either) has exited.
pub fn wait_all() {
    let me = current().0;
    for index in 0..MAX_THREADS {
        if index != IDLE && index != BOOT && index != me {
            join(ThreadId(index));
        }
    }
}

/// The running thread.
pub fn current() -> Token {
    Token(TABLE.lock().current)
}

/// The running thread's name.
pub fn current_name() -> &'static str {
    let table = TABLE.lock();
    table.slots[table.current].name
}

/// Lets the next runnable thread run, if there is one.
pub fn yield_now() {
    let mut table = TABLE.lock();
    if table.next_runnable().is_none() {
        return;
    }
    let current = table.current;
    if current != IDLE {
        table.slots[current].state = State::Runnable;
    }
    switch_away(table);
}

/// Sleeps at least `us` microseconds: the timer tick wakes the thread (from
/// interrupt context) once the deadline has passed.
pub fn sleep_us(us: u64) {
    let me = current();
    let deadline = time::now_us() + us;
    while time::now_us() < deadline {
        TABLE.lock().slots[me.0].wake_at = deadline.max(1);
        SCHEDULER.block(me);
    }
    TABLE.lock().slots[me.0].wake_at = 0;
}

/// The timer tick's work, in interrupt context: wakes the sleepers whose deadline
/// has come.
pub fn tick() {
    let now = time::now_us();
    let mut table = TABLE.lock();
    for index in 0..MAX_THREADS {
        let due = table.slots[index].wake_at;
        if due != 0 && due <= now {
            table.slots[index].wake_at = 0;
            if table.wake(index) && interrupts::in_interrupt() {
                IRQ_WAKES.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Called by the timer interrupt after its EOI: switches to the next runnable thread,
/// if any (the interrupted thread stays runnable).
pub fn preempt() {
    let mut table = TABLE.lock();
    if table.next_runnable().is_none() {
        return;
    }
    let current = table.current;
    if current != IDLE {
        table.slots[current].state = State::Runnable;
        PREEMPTIONS.fetch_add(1, Ordering::Relaxed);
    }
    switch_away(table);
}

/// Times a thread really went to sleep in `block`.
pub fn sleeps() -> u64 {
    SLEEPS.load(Ordering::Relaxed)
}

/// Times a wake made a sleeping thread runnable.
pub fn wakes() -> u64 {
    WAKES.load(Ordering::Relaxed)
}

/// Context switches.
pub fn switches() -> u64 {
    SWITCHES.load(Ordering::Relaxed)
}

/// Switches forced by the timer.
pub fn preemptions() -> u64 {
    PREEMPTIONS.load(Ordering::Relaxed)
}

/// Wakes of sleeping threads done in interrupt context by the timer tick.
pub fn irq_wakes() -> u64 {
    IRQ_WAKES.load(Ordering::Relaxed)
}

/// The kernel's [`Scheduler`] for genpager.
pub struct KernelScheduler;

/// The one instance, registered with [`genpager::sync::set_scheduler`].
pub static SCHEDULER: KernelScheduler = KernelScheduler;

impl Scheduler for KernelScheduler {
    fn current(&self) -> Token {
        current()
    }

    fn block(&self, token: Token) {
        let mut table = TABLE.lock();
        let me = table.current;
        debug_assert_eq!(token.0, me, "block names another thread");
        if core::mem::take(&mut table.slots[me].permit) {
            return;
        }
        table.slots[me].state = State::Blocked;
        SLEEPS.fetch_add(1, Ordering::Relaxed);
        switch_away(table);
        // Woken: the wake that did it also left a permit; it is used up.
        TABLE.lock().slots[me].permit = false;
    }

    fn wake(&self, token: Token) {
        if token.0 < MAX_THREADS {
            TABLE.lock().wake(token.0);
        }
    }
}
