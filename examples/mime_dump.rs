//! Print the analysis of a message file (and, with `--rewrite`, the rewritten message).
fn main() {
    let mut args = std::env::args().skip(1);
    let path = args.next().expect("usage: mime_dump FILE [--rewrite]");
    let raw = std::fs::read(&path).expect("read");
    let a = cryptshare_gateway::mime::analyse(&raw);
    for p in &a.parts {
        println!(
            "{:8} {:30} {:10} {:>9} {:8} {:?} {:?} h={} b={} e={} cut={:?} {}",
            if p.path.is_empty() { "root" } else { &p.path },
            p.content_type,
            p.class.as_str(),
            p.size,
            p.encoding.as_str(),
            p.file_name,
            p.upload_name,
            p.header_start,
            p.body_start,
            p.end,
            p.cut,
            p.reason
        );
    }
    println!("{:?}", a.flags);
    if args.next().as_deref() == Some("--rewrite") {
        let remove: Vec<_> = a.candidates().map(|p| p.id).collect();
        let notice = cryptshare_gateway::mime::Notice {
            language: "en".into(),
            sender: "a@b".into(),
            ..Default::default()
        };
        let out = cryptshare_gateway::mime::rewrite(&raw, &a, &remove, &notice).expect("rewrite");
        use std::io::Write;
        std::io::stdout().write_all(&out).unwrap();
    }
}
