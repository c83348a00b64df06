//! A tiny HTTP/1.1 server on 127.0.0.1 for the fetch tests.
//!
//! Owns misbehaving on purpose: each path is routed to a [`Reply`] that serves the bytes,
//! closes the connection early, or stalls after the headers. It counts requests so a test can
//! prove the cache spared the network. It must never be reachable from outside the machine
//! and never forwards anything: tests use no internet.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone)]
pub enum Reply {
    /// 200 with Content-Length and the whole body.
    Body(Vec<u8>),
    /// 200 announcing the whole body, then only its first `send` bytes and a close.
    Truncate { body: Vec<u8>, send: usize },
    /// 200 announcing the whole body, its first `send` bytes, then silence for `sleep`.
    Stall {
        body: Vec<u8>,
        send: usize,
        sleep: Duration,
    },
}

#[derive(Clone)]
pub struct Server {
    pub port: u16,
    routes: Arc<Mutex<HashMap<String, Reply>>>,
    requests: Arc<AtomicUsize>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    pub fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
        let port = listener.local_addr().expect("local addr").port();
        let server = Server {
            port,
            routes: Arc::default(),
            requests: Arc::default(),
            log: Arc::default(),
        };
        let shared = server.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let shared = shared.clone();
                std::thread::spawn(move || shared.serve(stream));
            }
        });
        server
    }

    pub fn route(&self, path: &str, reply: Reply) {
        self.routes
            .lock()
            .expect("routes lock")
            .insert(path.to_string(), reply);
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Requests received so far (any path).
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// Paths requested so far, in order.
    pub fn paths(&self) -> Vec<String> {
        self.log.lock().expect("log lock").clone()
    }

    fn serve(&self, stream: TcpStream) {
        let mut reader = BufReader::new(stream.try_clone().expect("clone stream"));
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).is_err() {
            return;
        }
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) if line == "\r\n" || line == "\n" => break,
                Ok(_) => {}
            }
        }
        self.requests.fetch_add(1, Ordering::SeqCst);
        let path = request_line
            .split_whitespace()
            .nth(1)
            .unwrap_or("/")
            .to_string();
        self.log.lock().expect("log lock").push(path.clone());
        let reply = self.routes.lock().expect("routes lock").get(&path).cloned();
        let mut out = stream;
        let head = |len: usize| {
            format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n")
        };
        // Write errors mean the client gave up, which some tests provoke.
        let _ = match reply {
            None => out.write_all(
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            ),
            Some(Reply::Body(body)) => out
                .write_all(head(body.len()).as_bytes())
                .and_then(|()| out.write_all(&body)),
            Some(Reply::Truncate { body, send }) => out
                .write_all(head(body.len()).as_bytes())
                .and_then(|()| out.write_all(&body[..send])),
            Some(Reply::Stall { body, send, sleep }) => {
                let sent = out
                    .write_all(head(body.len()).as_bytes())
                    .and_then(|()| out.write_all(&body[..send]))
                    .and_then(|()| out.flush());
                std::thread::sleep(sleep);
                sent
            }
        };
        let _ = out.flush();
    }
}
pub mod debian;
