import Synchronization

/// A WebRTC data channel ([RFC 8831](https://www.rfc-editor.org/rfc/rfc8831)), shaped like the
/// W3C `RTCDataChannel`: ``send(_:)-swift.method``, ``receive()``, ``close()``, ``readyState``,
/// ``bufferedAmount`` and ``bufferedAmountLowThreshold`` with ``bufferedAmountLowEvents``.
///
/// `send` is async and applies backpressure: it waits while ``bufferedAmount`` is at or above the
/// session's high-water mark instead of buffering without bound.
public final class DataChannel: @unchecked Sendable {  // protocol fields are confined to the loop queue; fields read elsewhere sit in `shared` (a Mutex)
    /// The W3C `RTCDataChannelState`.
    public enum ReadyState: String, Sendable, Equatable {
        case connecting, open, closing, closed
    }

    /// The SCTP stream id.
    public let id: UInt16
    /// The label from DATA_CHANNEL_OPEN (or the local one for pre-negotiated channels).
    public let label: String
    /// Ordering, reliability, protocol, priority and negotiation.
    public let options: DataChannelOptions

    let session: DataChannelSession

    /// Message and byte counters of one channel (empty messages count as messages of 0 bytes).
    public struct Statistics: Sendable, Equatable {
        /// Messages handed to SCTP.
        public var messagesSent = 0
        /// Bytes of those messages.
        public var bytesSent = 0
        /// Complete messages received.
        public var messagesReceived = 0
        /// Bytes of those messages.
        public var bytesReceived = 0
    }

    struct Shared {
        var statistics = Statistics()
        var state: ReadyState
        var bufferedAmount = 0
        var lowThreshold = 0
        var inbox = FIFO<DataChannelMessage>()
        var receivers = FIFO<CheckedContinuation<DataChannelMessage?, Never>>()
    }

    private let shared: Mutex<Shared>
    private let lowEvents: AsyncStream<Void>.Continuation

    /// Fires each time ``bufferedAmount`` falls from above ``bufferedAmountLowThreshold`` to at or
    /// below it (the W3C `bufferedamountlow` event). Only the newest event is kept.
    public let bufferedAmountLowEvents: AsyncStream<Void>

    // Loop-confined state (DataChannelLoop's executor).
    var queuedMessages = 0
    var resetWhenDrained = false
    var localResetRequested = false
    var localResetDone = false
    var remoteResetDone = false
    var openWaiter: CheckedContinuation<DataChannel, any Error>?
    var sendWaiters = FIFO<(message: DataChannelMessage, continuation: CheckedContinuation<Void, any Error>)>()
    var loopBufferedAmount = 0

    init(session: DataChannelSession, id: UInt16, label: String, options: DataChannelOptions, state: ReadyState) {
        self.session = session
        self.id = id
        self.label = label
        self.options = options
        self.shared = Mutex(Shared(state: state))
        let (stream, continuation) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        bufferedAmountLowEvents = stream
        lowEvents = continuation
    }

    /// The sub-protocol.
    public var `protocol`: String { options.protocol }

    /// The current state.
    public var readyState: ReadyState { shared.withLock { $0.state } }

    /// Counters of messages and bytes sent and received.
    public var statistics: Statistics { shared.withLock { $0.statistics } }

    /// Bytes of messages accepted by ``send(_:)-swift.method`` but not yet handed to SCTP.
    public var bufferedAmount: Int { shared.withLock { $0.bufferedAmount } }

    /// Threshold for ``bufferedAmountLowEvents`` (default 0).
    public var bufferedAmountLowThreshold: Int {
        get { shared.withLock { $0.lowThreshold } }
        set { shared.withLock { $0.lowThreshold = newValue } }
    }

    /// Sends a message, waiting first while ``bufferedAmount`` is at or above the high-water mark.
    /// Throws ``DataChannelError/Code/messageTooLarge`` above the peer's `max-message-size` and
    /// ``DataChannelError/Code/notOpen`` unless the channel is open.
    public func send(_ message: DataChannelMessage) async throws {
        let limit = session.configuration.remoteMaxMessageSize
        if limit > 0, message.byteCount > limit {
            throw DataChannelError(.messageTooLarge, "message of \(message.byteCount) bytes exceeds the peer's max-message-size \(limit) on channel \(id) '\(label)'")
        }
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            session.loop.execute { self.session.enqueue(message, on: self, continuation: continuation) }
        }
    }

    /// Sends binary data (empty allowed).
    public func send(_ bytes: [UInt8]) async throws { try await send(.binary(bytes)) }

    /// Sends a string (empty allowed).
    public func send(_ text: String) async throws { try await send(.text(text)) }

    /// The next message, or nil once the channel is closed and every received message was read.
    public func receive() async -> DataChannelMessage? {
        await withCheckedContinuation { (continuation: CheckedContinuation<DataChannelMessage?, Never>) in
            let ready: DataChannelMessage?? = shared.withLock { shared in
                if let message = shared.inbox.popFirst() { return .some(message) }
                if shared.state == .closed { return .some(nil) }
                shared.receivers.append(continuation)
                return .none
            }
            if let ready {
                if let message = ready { session.consumed(message.byteCount) }
                continuation.resume(returning: ready)
            }
        }
    }

    /// Received messages as an async sequence that ends when the channel closes.
    public var messages: AsyncStream<DataChannelMessage> {
        AsyncStream(unfolding: { await self.receive() })
    }

    /// Closes the channel: queued messages are sent first, then the outgoing stream is reset
    /// (RFC 8831 §6.7); the channel is closed once the peer has reset its side too.
    public func close() {
        session.loop.execute { self.session.closeChannel(self) }
    }

    deinit {
        // Messages nobody will read no longer hold back the session's receive window.
        let abandoned = shared.withLock { $0.inbox.removeAll().reduce(0) { $0 + $1.byteCount } }
        if abandoned > 0 { session.consumed(abandoned) }
    }

    // MARK: Loop side

    func setState(_ state: ReadyState) {
        let receivers: [CheckedContinuation<DataChannelMessage?, Never>] = shared.withLock { shared in
            shared.state = state
            return state == .closed ? shared.receivers.removeAll() : []
        }
        for receiver in receivers { receiver.resume(returning: nil) }
        if state == .closed { lowEvents.finish() }
    }

    func deliver(_ message: DataChannelMessage) {
        let receiver: CheckedContinuation<DataChannelMessage?, Never>? = shared.withLock { shared in
            shared.statistics.messagesReceived += 1
            shared.statistics.bytesReceived += message.byteCount
            if let receiver = shared.receivers.popFirst() { return receiver }
            shared.inbox.append(message)
            return nil
        }
        guard let receiver else { return }
        session.consumed(message.byteCount)
        receiver.resume(returning: message)
    }

    func countSent(_ bytes: Int) {
        shared.withLock { shared in
            shared.statistics.messagesSent += 1
            shared.statistics.bytesSent += bytes
        }
    }

    /// Updates the published buffered amount and fires the low event on a downward crossing.
    func adjustBufferedAmount(by delta: Int) {
        loopBufferedAmount += delta
        let amount = loopBufferedAmount
        let crossed: Bool = shared.withLock { shared in
            let before = shared.bufferedAmount
            shared.bufferedAmount = amount
            return delta < 0 && before > shared.lowThreshold && amount <= shared.lowThreshold
        }
        if crossed { lowEvents.yield() }
    }
}
