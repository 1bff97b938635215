import DataChannel
import ICE
import Synchronization

/// Adapts an ``ICEAgent``'s single component to DataChannel's ``DatagramTransport``.
///
/// Copies: libnice's receive callback copies each datagram once into a `[UInt8]`; the array is
/// then handed on by reference (ICE inbox → this adapter → the session's arrival queue). Sends
/// pass the DTLS record array straight to the agent's outbox. No other copy is made.
///
/// Receiving runs one task that drains ``ICEAgent/datagrams`` (a whole backlog per wakeup) and
/// forwards DTLS records (RFC 7983 first byte 20–63); libnice consumes STUN itself and anything
/// else (RTP, ZRTP, stray bytes) is dropped here.
final class ICEDatagramTransport: DatagramTransport {
    private let agent: ICEAgent
    private let receiver = Mutex<Task<Void, Never>?>(nil)
    private let closed = Atomic<Bool>(false)

    init(agent: ICEAgent) { self.agent = agent }

    func start(receive: @escaping @Sendable ([UInt8]) -> Void) {
        let datagrams = agent.datagrams
        let task = Task {
            for await datagram in datagrams where DatagramKind.classify(datagram) == .dtls {
                receive(datagram)
            }
        }
        receiver.withLock { $0 = task }
    }

    func send(_ datagram: [UInt8]) {
        guard !closed.load(ordering: .relaxed) else { return }
        // A full ICE send queue drops the record, as a full UDP socket buffer would; SCTP
        // retransmits and its congestion control slows down.
        agent.send(datagram)
    }

    func close() {
        closed.store(true, ordering: .relaxed)
        receiver.withLock { $0?.cancel() }
    }
}
