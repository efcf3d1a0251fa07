//! Kernel threads and a preemptive round-robin scheduler, shared by every CPU.
//!
//! The thread table is preallocated ([`MAX_THREADS`] slots), so [`wake`] never
//! allocates and is safe from an interrupt handler. The table sits in an
//! [`IrqMutex`]: a spin lock (exclusive between CPUs) taken with interrupts masked
//! (exclusive against this CPU's handlers). It holds one run queue for all CPUs and
//! each CPU's current and idle thread. Slot 0 is the boot thread, slot 1 the boot
//! CPU's idle thread; an AP's idle thread is the context it entered the kernel with
//! ([`run_ap`]). Idle threads are never picked by the round robin: a CPU switches to
//! its own idle thread only when nothing else is runnable.
//!
//! A switch saves the callee-saved registers and the stack pointer (`gk_switch`),
//! always with interrupts masked; the push_off state of the thread that leaves is
//! kept on its own stack across the switch ([`interrupts::save`]) and written into
//! whichever CPU it resumes on. The LAPIC timer preempts a thread only when
//! interrupts are on in it, so a thread that holds a spin lock (every spin lock masks
//! interrupts) is never preempted.
//!
//! The switch-race invariant (xv6's): **the table lock is held from the moment a
//! thread's state leaves Running until `gk_switch` has stored its stack pointer and
//! left its stack.** The leaving thread takes the lock, changes its state, picks the
//! next thread and calls `gk_switch` with the lock still held; the lock is released
//! by the thread that resumes on this CPU (at the end of its own `switch_away`, or in
//! `thread_main` for a new thread). Another CPU picks a thread only under the lock,
//! so it can never resume a thread whose registers are still being saved, and `join`
//! (which frees an exited thread's stack under the lock) never frees a stack still in
//! use. A thread is Running on at most one CPU: only Runnable threads are picked,
//! and picking makes them Running, under the lock.

use alloc::boxed::Box;
use alloc::vec;
use core::arch::{asm, global_asm};
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use genpager::sync::{Scheduler, Token};

use crate::interrupts::{self, IrqGuard, IrqMutex, NoIrq};
use crate::percpu::{self, MAX_CPUS};
use crate::{kprintln, time};

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
    /// A CPU's idle thread: never picked by the round robin, never exits.
    idle: bool,
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
        idle: false,
    };
}

struct Table {
    slots: [Slot; MAX_THREADS],
    /// Each CPU's running thread.
    current: [usize; MAX_CPUS],
    /// Each CPU's idle thread.
    idle: [usize; MAX_CPUS],
}

impl Table {
    /// The next runnable thread after `cpu`'s current one, round robin (never an idle
    /// thread).
    fn next_runnable(&self, cpu: usize) -> Option<usize> {
        (1..MAX_THREADS)
            .map(|step| (self.current[cpu] + step) % MAX_THREADS)
            .find(|&index| !self.slots[index].idle && self.slots[index].state == State::Runnable)
    }

    /// Ends the `hlt` of another CPU that sits in its idle thread, now that a thread
    /// became runnable (without this the next tick, 4 ms at most, would).
    fn kick_idle(&self) {
        let me = percpu::id();
        for cpu in 0..MAX_CPUS {
            let state = &percpu::CPUS[cpu];
            if cpu != me
                && state.online.load(Ordering::Relaxed)
                && self.current[cpu] == self.idle[cpu]
            {
                interrupts::send_resched(state.apic_id.load(Ordering::Relaxed));
            }
        }
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
                self.kick_idle();
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
    current: [BOOT; MAX_CPUS],
    idle: [IDLE; MAX_CPUS],
});

/// Saved stack pointers, outside the table (`gk_switch` writes through a raw
/// pointer), but written and read only under the table's lock (see the invariant in
/// the module comment).
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

/// Switches to the next runnable thread, or to this CPU's idle thread, or stays. The
/// caller has set the current thread's state (Runnable to stay in the rotation,
/// Blocked, Exited).
fn switch_away(mut table: IrqGuard<'_, Table>) {
    // The lock is held, so interrupts are masked: the CPU is this thread's until the
    // switch.
    let cpu = percpu::id();
    let current = table.current[cpu];
    let idle = table.idle[cpu];
    let stays = current == idle || table.slots[current].state == State::Runnable;
    let next = match table.next_runnable(cpu) {
        Some(next) => next,
        None if stays => current,
        None => idle,
    };
    if next == current {
        if current != idle {
            table.slots[current].state = State::Running;
        }
        return;
    }
    if next != idle {
        table.slots[next].state = State::Running;
    }
    table.current[cpu] = next;
    SWITCHES.fetch_add(1, Ordering::Relaxed);
    percpu::CPUS[cpu].switches.fetch_add(1, Ordering::Relaxed);
    let save = SAVED_RSP[current].as_ptr();
    let next_rsp = SAVED_RSP[next].load(Ordering::Relaxed);
    // The push_off state of this thread (the table guard's push_off included) stays
    // on this stack; the CPU's state becomes the next thread's.
    let state = interrupts::save();
    // SAFETY: interrupts are masked (the table's guard); `save` is this thread's slot
    // of a static; `next_rsp` was saved by `gk_switch` or built by `spawn` for `next`,
    // which no CPU runs: it was Runnable (or is this CPU's idle thread, which only
    // this CPU runs) and the table lock, held across the switch, keeps any other CPU
    // from picking this thread before its stack pointer is stored.
    unsafe { gk_switch(save, next_rsp) };
    // Running again, maybe on another CPU: this thread's push_off state goes into the
    // CPU it runs on now. The lock is held, taken by the thread that switched here; the
    // guard's drop releases it and undoes the guard's push_off.
    interrupts::restore(state);
    drop(table);
}

/// The first Rust code of a new thread.
extern "sysv64" fn thread_main() -> ! {
    // The switch into this thread left the table locked and one push_off held (the
    // switching thread's guard), to come undone here.
    interrupts::restore(interrupts::Saved::NEW_THREAD);
    // SAFETY: the thread that switched here holds the table lock across `gk_switch`
    // and hands it to the thread it switched to (the module's invariant); its guard
    // will release it only after another switch back into that thread, by which time
    // the lock is held again on its behalf.
    unsafe { TABLE.force_unlock() };
    genpager::sync::Interrupts::enable(&interrupts::INTERRUPTS);
    let (entry, arg) = {
        let table = TABLE.lock();
        let slot = &table.slots[table.current[percpu::id()]];
        (slot.entry, slot.arg)
    };
    if let Some(entry) = entry {
        entry(arg);
    }
    exit()
}

/// Ends the current thread.
fn exit() -> ! {
    let mut table = TABLE.lock();
    let current = table.current[percpu::id()];
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
        table.current[0] = BOOT;
    }
    let idle = spawn("idle-0", idle_loop, 0);
    assert_eq!(idle.0, IDLE);
    {
        // Out of the rotation: picked only by its CPU, when nothing else is runnable.
        let mut table = TABLE.lock();
        table.slots[IDLE].idle = true;
        table.slots[IDLE].state = State::Running;
        table.idle[0] = IDLE;
    }
    percpu::CPUS[0].online.store(true, Ordering::Release);
}

/// Makes the calling context (an AP, on its boot stack, interrupts masked, its LAPIC
/// timer running) CPU `cpu`'s idle thread and runs the idle loop: from then on the
/// CPU runs whatever threads are runnable. `started` runs once the CPU is in the
/// table, before interrupts come on.
pub fn run_ap(cpu: usize, name: &'static str, started: impl FnOnce()) -> ! {
    {
        let mut table = TABLE.lock();
        let index = (0..MAX_THREADS)
            .find(|&index| index != BOOT && table.slots[index].state == State::Free)
            .expect("no free thread slot for an idle thread");
        table.slots[index] = Slot {
            state: State::Running,
            name,
            idle: true,
            ..Slot::FREE
        };
        table.current[cpu] = index;
        table.idle[cpu] = index;
    }
    percpu::CPUS[cpu].online.store(true, Ordering::Release);
    started();
    interrupts::enable_now();
    idle_loop(cpu);
    unreachable!("the idle loop returned");
}

/// The idle thread: halts until an interrupt, runs whatever became runnable.
fn idle_loop(_: usize) {
    loop {
        // Look with interrupts masked, then `sti; hlt`: `sti` takes effect after the
        // next instruction, so a wake between the look and the halt still ends it.
        // SAFETY: masks interrupts; this thread holds no push_off (depth 0).
        unsafe { asm!("cli", options(nostack)) };
        let runnable = {
            let table = TABLE.lock();
            table.next_runnable(percpu::id()).is_some()
        };
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
        idle: false,
    };
    table.kick_idle();
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
            _ if slot.idle => return,
            _ => {
                slot.joiner = Some(me.0);
                drop(table);
                SCHEDULER.block(me);
            }
        }
    }
}

/// Waits until every spawned thread (but the idle threads and the caller; the boot
/// thread never exits, so it is not waited for either) has exited.
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
    let table = TABLE.lock();
    Token(table.current[percpu::id()])
}

/// The running thread's name.
pub fn current_name() -> &'static str {
    let table = TABLE.lock();
    table.slots[table.current[percpu::id()]].name
}

/// The index of the CPU the caller runs on (it may have moved by the time it looks).
pub fn cpu_id() -> usize {
    let _masked = NoIrq::new();
    percpu::id()
}

/// Lets the next runnable thread run, if there is one.
pub fn yield_now() {
    give_way();
}

/// Switches to the next runnable thread, if there is one, leaving the current one
/// runnable; says whether a thread (not the idle one) was put back in the rotation.
fn give_way() -> bool {
    let mut table = TABLE.lock();
    let cpu = percpu::id();
    if table.next_runnable(cpu).is_none() {
        return false;
    }
    let current = table.current[cpu];
    let rotated = current != table.idle[cpu];
    if rotated {
        table.slots[current].state = State::Runnable;
    }
    switch_away(table);
    rotated
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

/// Sleeps until a [`KernelScheduler::wake`] of this thread or `us` microseconds,
/// whichever comes first (a page daemon's wait: kicked by a thread short of memory,
/// or its period over). May also return early for a wake meant for an earlier wait.
pub fn sleep_or_wake(us: u64) {
    let me = current();
    let deadline = time::now_us() + us;
    TABLE.lock().slots[me.0].wake_at = deadline.max(1);
    SCHEDULER.block(me);
    TABLE.lock().slots[me.0].wake_at = 0;
}

/// The timer tick's work, in interrupt context: wakes the sleepers whose deadline
/// has come.
pub fn tick() {
    let now = time::now_us();
    watchdog(now);
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
    if give_way() {
        PREEMPTIONS.fetch_add(1, Ordering::Relaxed);
    }
}

/// Microseconds without any context switch after which the watchdog ends the run.
const WATCHDOG_US: u64 = 30_000_000;
/// The switch count and time the watchdog last saw it change.
static WATCHDOG_SEEN: [AtomicU64; 2] = [const { AtomicU64::new(0) }; 2];

/// Called by every timer tick: if no CPU has switched threads for [`WATCHDOG_US`],
/// prints what each CPU runs and ends the run as a failure (a hang would otherwise
/// show only as the script's timeout).
fn watchdog(now: u64) {
    let switches = SWITCHES.load(Ordering::Relaxed);
    if WATCHDOG_SEEN[0].swap(switches, Ordering::Relaxed) != switches {
        WATCHDOG_SEEN[1].store(now, Ordering::Relaxed);
        return;
    }
    let since = WATCHDOG_SEEN[1].load(Ordering::Relaxed);
    if since == 0 || now.saturating_sub(since) < WATCHDOG_US {
        if since == 0 {
            WATCHDOG_SEEN[1].store(now, Ordering::Relaxed);
        }
        return;
    }
    kprintln!();
    kprintln!(
        "genpager kernel: WATCHDOG: no context switch for {} s (noticed on CPU {})",
        (now - since) / 1_000_000,
        percpu::id()
    );
    match TABLE.try_lock() {
        Some(table) => {
            for cpu in 0..MAX_CPUS {
                kprintln!(
                    "genpager kernel: CPU {cpu} runs {:?} (online {})",
                    table.slots[table.current[cpu]].name,
                    percpu::CPUS[cpu].online.load(Ordering::Relaxed)
                );
            }
        }
        None => kprintln!("genpager kernel: the thread table is locked"),
    }
    kprintln!("genpager kernel self-test: aborted by the watchdog");
    crate::arch::exit_qemu(crate::arch::ExitCode::Failure)
}

/// Each CPU's context switches so far.
pub fn cpu_switches() -> [u64; MAX_CPUS] {
    percpu::switches()
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

impl KernelScheduler {
    /// [`Scheduler::block`], saying whether the thread really slept (false: a permit
    /// was waiting, and it returned at once).
    pub fn block_slept(&self, token: Token) -> bool {
        let mut table = TABLE.lock();
        let me = table.current[percpu::id()];
        debug_assert_eq!(token.0, me, "block names another thread");
        if core::mem::take(&mut table.slots[me].permit) {
            return false;
        }
        table.slots[me].state = State::Blocked;
        SLEEPS.fetch_add(1, Ordering::Relaxed);
        switch_away(table);
        // Woken: the wake that did it also left a permit; it is used up.
        TABLE.lock().slots[me].permit = false;
        true
    }

    /// [`Scheduler::wake`], saying whether it woke a sleeping thread (false: it left a
    /// permit for a thread not asleep, or named no thread).
    pub fn wake_sleeper(&self, token: Token) -> bool {
        token.0 < MAX_THREADS && TABLE.lock().wake(token.0)
    }
}

impl Scheduler for KernelScheduler {
    fn current(&self) -> Token {
        current()
    }

    fn block(&self, token: Token) {
        self.block_slept(token);
    }

    fn wake(&self, token: Token) {
        self.wake_sleeper(token);
    }
}
