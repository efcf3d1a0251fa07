//! `ext2`: genpager over an ext2 image made by `mke2fs`.
//!
//! ```text
//! cargo run --release -p genpager-ext2 --example ext2 -- IMAGE cat PATH
//! cargo run --release -p genpager-ext2 --example ext2 -- IMAGE write PATH OFFSET < data
//! cargo run --release -p genpager-ext2 --example ext2 -- IMAGE ls PATH
//! cargo run --release -p genpager-ext2 --example ext2 -- IMAGE stats PATH
//! cargo run --release -p genpager-ext2 --example ext2      # the sample image
//! ```
//!
//! All file data goes through genpager; errors are one line on stderr and a
//! non-zero exit status.

use std::path::Path;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("images/sample.img");
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let status = genpager_ext2::cli::run(
        &args,
        &sample,
        &mut std::io::stdin().lock(),
        &mut out,
        &mut std::io::stderr(),
    );
    drop(out);
    std::process::exit(status);
}
