//! `cryptshare-sim --listen ADDR --data DIR [--client-id ID]`: the Cryptshare REST API emulator.
fn main() {
    eprintln!("cryptshare-sim: not built yet");
    std::process::exit(2);
}
