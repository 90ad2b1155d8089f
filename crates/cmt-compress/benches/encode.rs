fn main() {
    eprintln!("encode bench: not written yet");
}
