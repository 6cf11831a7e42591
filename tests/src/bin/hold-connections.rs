//! Holds many idle connections to a server from a process of its own, so a test can have ten
//! thousand clients without two file descriptors per connection in one process.
//!
//! `hold-connections ADDR N`: connects N times and prints `ready`; then, for every line on
//! stdin, sends `ECHO <index>` on every connection, checks each reply, and prints `ok`.

use std::io::{BufRead, Read, Write};
use std::net::TcpStream;

fn main() {
    let mut args = std::env::args().skip(1);
    let addr = args.next().expect("usage: hold-connections ADDR N");
    let n: usize =
        args.next().and_then(|n| n.parse().ok()).expect("usage: hold-connections ADDR N");
    let mut conns: Vec<TcpStream> = (0..n)
        .map(|i| TcpStream::connect(&addr).unwrap_or_else(|e| panic!("connection {i}: {e}")))
        .collect();
    println!("ready");
    for line in std::io::stdin().lock().lines() {
        if line.is_err() {
            break;
        }
        for (i, conn) in conns.iter_mut().enumerate() {
            conn.write_all(format!("*2\r\n$4\r\nECHO\r\n$5\r\n{i:05}\r\n").as_bytes())
                .expect("write");
        }
        for (i, conn) in conns.iter_mut().enumerate() {
            let mut reply = [0u8; 11];
            conn.read_exact(&mut reply).unwrap_or_else(|e| panic!("connection {i}: {e}"));
            assert_eq!(reply, format!("$5\r\n{i:05}\r\n").as_bytes(), "connection {i}");
        }
        println!("ok");
    }
}
