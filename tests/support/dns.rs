//! A DNS server on loopback whose answers the test sets: A records for
//! every name asked (AAAA questions get an empty answer), or SERVFAIL
//! while it is "down". It counts the A questions, so a test can await the
//! resolver's next rounds instead of sleeping.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record, RecordType};
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What the server answers now: the addresses, or `None` for SERVFAIL.
type Answer = Option<Vec<Ipv4Addr>>;

pub struct DnsServer {
    pub addr: SocketAddr,
    answer: Arc<Mutex<Answer>>,
    questions: watch::Receiver<usize>,
    task: JoinHandle<()>,
}

impl DnsServer {
    /// Serves `addresses` for every name on a fresh loopback port.
    pub async fn start(addresses: &[Ipv4Addr]) -> DnsServer {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind DNS");
        let addr = socket.local_addr().expect("local addr");
        let answer: Arc<Mutex<Answer>> = Arc::new(Mutex::new(Some(addresses.to_vec())));
        let (count, questions) = watch::channel(0_usize);
        let current = Arc::clone(&answer);
        let task = tokio::spawn(async move {
            let mut buffer = vec![0_u8; 4096];
            loop {
                let Ok((length, peer)) = socket.recv_from(&mut buffer).await else { continue };
                let Ok(query) = Message::from_vec(&buffer[..length]) else { continue };
                let answer = current.lock().unwrap_or_else(PoisonError::into_inner).clone();
                let mut response = Message::response(query.metadata.id, query.metadata.op_code);
                response.metadata.message_type = MessageType::Response;
                response.metadata.recursion_desired = query.metadata.recursion_desired;
                response.metadata.recursion_available = true;
                response.add_queries(query.queries.iter().cloned());
                let asks_a = query.queries.iter().any(|question| question.query_type() == RecordType::A);
                match answer {
                    None => response.metadata.response_code = ResponseCode::ServFail,
                    Some(addresses) => {
                        for question in query.queries.iter().filter(|question| question.query_type() == RecordType::A) {
                            for address in &addresses {
                                response.add_answer(Record::from_rdata(
                                    question.name().clone(),
                                    300,
                                    RData::A(A(*address)),
                                ));
                            }
                        }
                    }
                }
                if let Ok(bytes) = response.to_vec() {
                    let _ = socket.send_to(&bytes, peer).await;
                }
                if asks_a {
                    count.send_modify(|count| *count += 1);
                }
            }
        });
        DnsServer { addr, answer, questions, task }
    }

    /// Answers `addresses` from now on.
    pub fn answer(&self, addresses: &[Ipv4Addr]) {
        *self.answer.lock().unwrap_or_else(PoisonError::into_inner) = Some(addresses.to_vec());
    }

    /// Answers SERVFAIL from now on.
    pub fn fail(&self) {
        *self.answer.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// A questions answered so far.
    pub fn questions(&self) -> usize {
        *self.questions.borrow()
    }

    /// Waits until `count` A questions have been answered.
    pub async fn answered(&self, count: usize) {
        let mut questions = self.questions.clone();
        questions.wait_for(|answered| *answered >= count).await.expect("the DNS server runs");
    }

    /// Waits until the resolver has applied what the server answers now:
    /// the second round asked after this call started follows the first
    /// one's answer (a round asks, applies, then sleeps).
    pub async fn applied(&self) {
        self.answered(self.questions() + 2).await;
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
