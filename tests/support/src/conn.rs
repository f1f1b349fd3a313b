//! A sans-IO transport of `sshr-protocol` driven over a blocking socket: a scriptable
//! SSH peer for tests that need to do what no real client does.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use std::sync::Arc;

use sshr_protocol::auth;
use sshr_protocol::transport::{ClientOptions, Config, Event, Input, Transport};
use sshr_protocol::Error;

/// A transport driven over a blocking socket.
pub struct Conn {
    pub t: Transport,
    pub s: TcpStream,
    pub rx: Vec<u8>,
    pub events: Vec<Event>,
}

impl Conn {
    pub fn new(t: Transport, s: TcpStream) -> Self {
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        s.set_nodelay(true).unwrap();
        Self {
            t,
            s,
            rx: Vec::new(),
            events: Vec::new(),
        }
    }

    /// A client transport with default settings and a fresh random seed over `s`, with
    /// the `ssh-userauth` service requested (it goes out with the first read or flush
    /// after the key exchange).
    pub fn client(s: TcpStream) -> Self {
        let mut seed = [0u8; 32];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut seed);
        let t = Transport::client(
            Arc::new(Config::default()),
            ClientOptions::default(),
            seed,
            Instant::now(),
        );
        let mut c = Conn::new(t, s);
        c.t.request_service(auth::SERVICE)
            .expect("a new transport takes a service request");
        c
    }

    /// [`Conn::client`] over a new connection to `port` on loopback.
    pub fn connect(port: u16) -> Self {
        let s = TcpStream::connect(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("connect to 127.0.0.1:{port}: {e}"));
        Conn::client(s)
    }

    /// A client logged in as `user` on loopback `port` with the private key file
    /// `key` (after a `none` attempt, as OpenSSH makes one): the relay runs behind it.
    pub fn logged_in(port: u16, user: &str, key: &std::path::Path) -> Self {
        use sshr_protocol::hostkey::PrivateKey;
        use sshr_protocol::msg;
        let key = PrivateKey::from_openssh(&std::fs::read_to_string(key).unwrap()).unwrap();
        let mut c = Conn::connect(port);
        let none = auth::Request {
            user,
            service: auth::CONNECTION_SERVICE,
            method: auth::Method::None,
        };
        c.t.send(&none.encode()).unwrap();
        assert_eq!(c.next_packet().unwrap()[0], msg::USERAUTH_FAILURE);
        let sid = c.t.session_id().unwrap().to_vec();
        let req = auth::signed_publickey_request(
            c.t.provider(),
            &sid,
            user,
            auth::CONNECTION_SERVICE,
            &key,
            key.sig_algs()[0],
        )
        .unwrap();
        c.t.send(&req).unwrap();
        for _ in 0..100 {
            if c.next_packet().expect("login")[0] == msg::USERAUTH_SUCCESS {
                return c;
            }
        }
        panic!("no USERAUTH_SUCCESS");
    }

    pub fn flush(&mut self) {
        let out = self.t.transmit();
        if !out.is_empty() {
            let n = out.len();
            self.s.write_all(out).unwrap();
            self.t.advance_transmit(n);
        }
    }

    /// The next message for the layers above.
    pub fn next_packet(&mut self) -> Result<Vec<u8>, Error> {
        loop {
            self.flush();
            let r = self.t.read(&mut self.rx, Instant::now());
            while let Some(e) = self.t.poll_event() {
                self.events.push(e);
            }
            match r {
                Ok(Input::Consumed(n)) => {
                    self.rx.drain(..n);
                }
                Ok(Input::Packet { len, payload }) => {
                    let p = self.rx[payload].to_vec();
                    self.rx.drain(..len);
                    return Ok(p);
                }
                Ok(Input::NeedMore(_)) => {
                    let mut buf = [0u8; 65536];
                    let n = self.s.read(&mut buf).expect("read from peer");
                    if n == 0 {
                        return Err(Error::Local("peer closed the connection".into()));
                    }
                    self.rx.extend_from_slice(&buf[..n]);
                }
                Err(e) => {
                    self.flush();
                    return Err(e);
                }
            }
        }
    }
}
