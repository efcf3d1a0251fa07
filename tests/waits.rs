//! Waits seen from the kernel's side of the [`Scheduler`] hook: which thread blocks,
//! which thread each wakeup goes to, and from where.
//!
//! A counting scheduler wraps the std thread parker (registered before anything in
//! this binary waits), so these tests run exactly the wait code a kernel runs. Three
//! promises are checked:
//! - sleeping allocates nothing (a counting allocator, `tests/heap`, around a sleep:
//!   [`sleeping_allocates_nothing`]);
//! - an unbusy wakes only the threads waiting for that page ([`one_unbusy_wakes_only_its_waiter`]);
//! - a device completing from its own ("interrupt") thread wakes, per request, at most
//!   the one thread that waits for it, while eight threads fault, write and flush one
//!   file ([`eight_threads_and_an_interrupt_thread`], which also reports how many
//!   wakeups and blocks there were).
#![cfg(not(loom))]

mod common;
mod heap;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, Once};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use genpager::sync::{Scheduler, ThreadParker, Token, WaitQueue, set_scheduler};
use genpager::testing::{Layout, MemDisk, MemFs};
use genpager::{Fault, Fetched, GetFlags, PAGE_SIZE, PutFlags, getpages, putpages, read, write};

const P: u64 = PAGE_SIZE as u64;

/// One wakeup: which thread called `wake` (by name) and which token it woke.
#[derive(Clone, Debug)]
struct Wakeup {
    from_interrupt: bool,
    to: Token,
}

/// The std thread parker, with a log of every wakeup and a count of the threads
/// blocked right now.
struct Counting {
    parker: ThreadParker,
    wakeups: Mutex<Vec<Wakeup>>,
    blocked: Mutex<BTreeMap<usize, usize>>,
    blocks: AtomicUsize,
}

impl Scheduler for Counting {
    fn current(&self) -> Token {
        self.parker.current()
    }

    fn block(&self, token: Token) {
        self.blocks.fetch_add(1, Ordering::SeqCst);
        // The test's own bookkeeping: not counted against the wait that blocks.
        heap::uncounted(|| *self.blocked.lock().unwrap().entry(token.0).or_default() += 1);
        self.parker.block(token);
        heap::uncounted(|| *self.blocked.lock().unwrap().entry(token.0).or_default() -= 1);
    }

    fn wake(&self, token: Token) {
        let from_interrupt = thread::current().name() == Some(genpager::testing::COMPLETION_THREAD);
        self.wakeups.lock().unwrap().push(Wakeup {
            from_interrupt,
            to: token,
        });
        self.parker.wake(token);
    }
}

static COUNTING: Counting = Counting {
    parker: ThreadParker,
    wakeups: Mutex::new(Vec::new()),
    blocked: Mutex::new(BTreeMap::new()),
    blocks: AtomicUsize::new(0),
};

/// Registers [`COUNTING`] before the first wait of this binary.
fn counting() -> &'static Counting {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| set_scheduler(&COUNTING));
    &COUNTING
}

impl Counting {
    fn is_blocked(&self, token: Token) -> bool {
        self.blocked
            .lock()
            .unwrap()
            .get(&token.0)
            .is_some_and(|n| *n > 0)
    }

    /// Wakeups sent to any of `tokens` since the log had `since` entries.
    fn wakeups_to(&self, tokens: &[Token], since: usize) -> Vec<Wakeup> {
        self.wakeups.lock().unwrap()[since..]
            .iter()
            .filter(|w| tokens.contains(&w.to))
            .cloned()
            .collect()
    }

    fn logged(&self) -> usize {
        self.wakeups.lock().unwrap().len()
    }
}

/// One test at a time: the counting scheduler is the whole binary's, and another
/// test's threads waking their own (stack-held, reused) tokens while one test counts
/// its wakeups showed up as wakeups of its waiters (about one run in six).
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|poison| poison.into_inner())
}

fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        thread::sleep(Duration::from_millis(1));
    }
}

/// Sleeping allocates nothing: the waiter's node lives on its own stack. A thread
/// sleeps on a wait channel, counted by the counting allocator from before it links
/// its node until it is woken and has left the wait.
#[test]
fn sleeping_allocates_nothing() {
    let _serial = serial();
    let counting = counting();
    let queue = std::sync::Arc::new(WaitQueue::new());
    let condition = std::sync::Arc::new(Mutex::new(false));
    let sleeper = {
        let (queue, condition) = (queue.clone(), condition.clone());
        thread::spawn(move || {
            // This thread's parker record is made before counting starts.
            counting.current();
            let guard = condition.lock().unwrap();
            let heap = heap::counted(|| queue.sleep(1, guard));
            (heap, *condition.lock().unwrap())
        })
    };
    until("the sleeper sleeps", || queue.sleepers(1) == 1);
    *condition.lock().unwrap() = true;
    assert_eq!(queue.wake(1), 1);
    let (heap, woken) = sleeper.join().unwrap();
    assert!(woken, "the sleeper saw the condition its wake announced");
    assert_eq!(heap, heap::Heap::default(), "a sleep allocated or freed");
}

/// Eight pages held busy by one thread, eight threads each faulting one of them: each
/// release wakes exactly the thread waiting for that page, and the others stay asleep.
#[test]
fn one_unbusy_wakes_only_its_waiter() {
    let _serial = serial();
    let counting = counting();
    const N: usize = 8;
    let (_disk, file) = file_with(12, Layout::Contiguous, &pattern(N * PAGE_SIZE, 7));
    let mut held: Vec<Option<_>> = (0..N)
        .map(|i| {
            match getpages(
                &file,
                Fault::read(i as u64 * P, 1).with_flags(GetFlags::NOREADAHEAD),
            ) {
                Ok(Fetched::Busy(pages)) => Some(pages),
                Ok(_) => panic!("holding page {i}: not a busy page"),
                Err(error) => panic!("holding page {i}: {error}"),
            }
        })
        .collect();
    let file = &file;
    // `held` moves into the scope's closure: a failed assertion drops it while
    // unwinding, before the scope joins the waiters, which then finish.
    thread::scope(move |scope| {
        let (tokens_tx, tokens_rx) = std::sync::mpsc::channel();
        let waiters: Vec<_> = (0..N)
            .map(|i| {
                let tokens_tx = tokens_tx.clone();
                scope.spawn(move || {
                    tokens_tx.send((i, counting.current())).unwrap();
                    // No read-ahead: its requests' completions would be wakeups
                    // of their own, not the unbusy's this test counts.
                    let fault = Fault::read(i as u64 * P, 1).with_flags(GetFlags::NOREADAHEAD);
                    match getpages(file, fault) {
                        Ok(Fetched::Busy(pages)) => drop(pages),
                        Ok(_) => panic!("waiter {i}: not a busy page"),
                        Err(error) => panic!("waiter {i}: {error}"),
                    }
                })
            })
            .collect();
        let mut tokens = vec![Token(0); N];
        for _ in 0..N {
            let (i, token) = tokens_rx.recv().unwrap();
            tokens[i] = token;
        }
        until("every waiter sleeps", || {
            tokens.iter().all(|t| counting.is_blocked(*t))
        });
        let mut waiters: Vec<_> = waiters.into_iter().map(Some).collect();
        for i in [5, 0, 7, 2, 3, 6, 1, 4] {
            let since = counting.logged();
            drop(held[i].take());
            waiters[i].take().unwrap().join().unwrap();
            let woken = counting.wakeups_to(&tokens, since);
            assert_eq!(
                woken.iter().map(|w| w.to).collect::<Vec<_>>(),
                vec![tokens[i]],
                "releasing page {i} woke {woken:?}"
            );
            for (j, waiter) in waiters.iter().enumerate() {
                if waiter.is_some() {
                    assert!(counting.is_blocked(tokens[j]), "waiter {j} woke early");
                }
            }
        }
    });
}

/// Eight threads fault, write, read and flush one file whose disk completes requests
/// out of order from its own thread (the "interrupt"). Each completion wakes at most
/// the one thread that waits for it, and never a thread outside the test; the file
/// ends as written. Prints how many wakeups there were and how many blocks.
#[test]
fn eight_threads_and_an_interrupt_thread() {
    let _serial = serial();
    let counting = counting();
    const THREADS: usize = 8;
    const PAGES_EACH: usize = 4;
    const PAGES: usize = THREADS * PAGES_EACH;
    const ROUNDS: usize = 200;
    const CHUNK: usize = 64;
    let disk = MemDisk::threaded((2 * PAGES * PAGE_SIZE / 512) as u64 + 64, true);
    let fs = MemFs::new(disk.clone(), 12, Layout::Contiguous);
    let file = fs.create(&vec![0u8; PAGES * PAGE_SIZE]).unwrap();
    let since = counting.logged();
    let blocks_before = counting.blocks.load(Ordering::SeqCst);
    let requests_before = disk.stats().requests;
    // A debug build takes seconds here (more at 16 KiB pages): a hang is what
    // minutes without a return mean.
    let limit = Duration::from_secs(120);
    let (tokens, models): (Vec<Token>, Vec<Vec<u8>>) = within_for("eight threads", limit, {
        let file = file.clone();
        move || {
            thread::scope(|scope| {
                let handles: Vec<_> = (0..THREADS)
                    .map(|me| {
                        let file = &file;
                        scope.spawn(move || {
                            let token = counting.current();
                            let first = (me * PAGES_EACH * PAGE_SIZE) as u64;
                            let mut model = vec![0u8; PAGES_EACH * PAGE_SIZE];
                            let mut seed = me as u64 * 7919 + 1;
                            for round in 0..ROUNDS {
                                seed ^= seed << 13;
                                seed ^= seed >> 7;
                                seed ^= seed << 17;
                                // Write into my own pages.
                                let at = (seed as usize % (model.len() / CHUNK)) * CHUNK;
                                let bytes = [(me as u8) << 4 | (round as u8 & 15); CHUNK];
                                assert_eq!(write(file, first + at as u64, &bytes), Ok(CHUNK));
                                model[at..at + CHUNK].copy_from_slice(&bytes);
                                // Read anyone's pages, through read() and a fault.
                                let page = (seed >> 20) % PAGES as u64;
                                let mut buf = vec![0u8; PAGE_SIZE];
                                read(file, page * P, &mut buf).unwrap();
                                let count = 2.min(PAGES - page as usize);
                                if let Ok(Fetched::Busy(pages)) =
                                    getpages(file, Fault::read(page * P, count))
                                {
                                    drop(pages);
                                }
                                // Flush now and then: synchronously, or freeing the pages.
                                if round % 8 == me % 8 {
                                    let flags = if round % 16 == me % 16 {
                                        PutFlags::CLEANIT | PutFlags::SYNCIO
                                    } else {
                                        PutFlags::CLEANIT | PutFlags::FREE
                                    };
                                    putpages(file, 0, 0, flags).unwrap();
                                }
                            }
                            (token, model)
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).unzip()
            })
        }
    });
    let mut tokens = tokens;
    tokens.push(counting.current());
    putpages(&file, 0, 0, PutFlags::CLEANIT | PutFlags::SYNCIO).unwrap();
    let requests = disk.stats().requests - requests_before;
    let all: Vec<Wakeup> = counting.wakeups.lock().unwrap()[since..].to_vec();
    let from_interrupt: Vec<&Wakeup> = all.iter().filter(|w| w.from_interrupt).collect();
    let to_test = counting.wakeups_to(&tokens, since).len();
    let blocks = counting.blocks.load(Ordering::SeqCst) - blocks_before;
    eprintln!(
        "{requests} requests; {to_test} wakeups to this test's threads, {} of them from the \
         completion thread; {blocks} blocks",
        from_interrupt.len()
    );
    assert!(
        from_interrupt.len() as u64 <= requests,
        "the completion thread woke {} threads for {requests} requests",
        from_interrupt.len()
    );
    let strays: Vec<_> = from_interrupt
        .iter()
        .filter(|w| !tokens.contains(&w.to))
        .collect();
    assert!(
        strays.is_empty(),
        "completion woke other threads: {strays:?}"
    );
    let expected: Vec<u8> = models.concat();
    assert!(
        file.disk_contents()[..expected.len()] == expected[..],
        "the file's bytes on disk differ from what the threads wrote"
    );
}
