import Synchronization

/// Two connected in-memory ``DatagramTransport`` ends, with optional seeded impairments
/// (loss, duplication, reordering) for tests and benchmarks.
public enum MemoryDatagramPipe {
    /// Impairments applied to each datagram, decided by a seeded generator so runs repeat.
    public struct Impairment: Sendable {
        /// Probability in 0...1 that a datagram is dropped.
        public var loss: Double
        /// Probability that a datagram is delivered twice.
        public var duplication: Double
        /// Probability that a datagram is held back and delivered after the next one.
        public var reordering: Double
        /// Seed of the generator.
        public var seed: UInt64

        /// Creates an impairment profile; all zero means a perfect link.
        public init(loss: Double = 0, duplication: Double = 0, reordering: Double = 0, seed: UInt64 = 1) {
            self.loss = loss
            self.duplication = duplication
            self.reordering = reordering
            self.seed = seed
        }
    }

    /// Creates a connected pair; `impairment` applies to both directions (independent generators).
    /// `maximumDatagramSize` is what both ends report as ``DatagramTransport/maximumDatagramSize``
    /// (nil: sessions keep their configured MTU).
    public static func makePair(impairment: Impairment = Impairment(),
                                maximumDatagramSize: Int? = nil) -> (MemoryDatagramEnd, MemoryDatagramEnd) {
        let a = MemoryDatagramEnd(impairment: impairment, seed: impairment.seed, maximumDatagramSize: maximumDatagramSize)
        let b = MemoryDatagramEnd(impairment: impairment, seed: impairment.seed &+ 0x9E37_79B9_7F4A_7C15,
                                  maximumDatagramSize: maximumDatagramSize)
        a.peer.withLock { $0 = b }
        b.peer.withLock { $0 = a }
        return (a, b)
    }
}

/// One end of a ``MemoryDatagramPipe``. `send` calls the other end's receive handler directly;
/// sessions' handlers only enqueue the datagram onto their loop, so no protocol code runs on the
/// sender's stack.
public final class MemoryDatagramEnd: DatagramTransport {
    /// The receive handler in a box: reading a closure stored in a generic container (the
    /// Mutex) makes Swift wrap it in reabstraction thunks on every read.
    fileprivate final class Receiver: Sendable {
        let call: @Sendable ([UInt8]) -> Void
        init(_ call: @escaping @Sendable ([UInt8]) -> Void) { self.call = call }
    }

    fileprivate struct State {
        var receive: Receiver?
        /// Datagrams that arrived before `start` (at most 64), like a socket's receive buffer.
        var early: [[UInt8]] = []
        var closed = false
        var held: [UInt8]?
        var random: SplitMix64
        var sent = 0
        var dropped = 0
        var largest = 0
        var limit: Int?
        var aboveLimit = 0
        var limitObservers: [@Sendable () -> Void] = []
    }

    fileprivate let peer = Mutex<MemoryDatagramEnd?>(nil)
    private let state: Mutex<State>
    private let impairment: MemoryDatagramPipe.Impairment
    fileprivate init(impairment: MemoryDatagramPipe.Impairment, seed: UInt64, maximumDatagramSize: Int?) {
        self.impairment = impairment
        self.state = Mutex(State(random: SplitMix64(seed: seed), limit: maximumDatagramSize))
    }

    /// What this end reports as ``DatagramTransport/maximumDatagramSize``.
    public var maximumDatagramSize: Int? { state.withLock { $0.limit } }

    public func observeMaximumDatagramSizeChanges(_ changed: @escaping @Sendable () -> Void) {
        state.withLock { $0.limitObservers.append(changed) }
    }

    /// Changes ``maximumDatagramSize`` (as a new ICE pair with another path would) and tells the
    /// observers; datagrams sent above the new value from now on are still delivered (as IP
    /// fragmentation would) and counted in ``datagramsAboveLimit``.
    public func setMaximumDatagramSize(_ limit: Int?) {
        let observers = state.withLock { state in
            state.limit = limit
            state.aboveLimit = 0
            return state.limitObservers
        }
        for observer in observers { observer() }
    }

    /// Datagrams sent above ``maximumDatagramSize`` since it was last set.
    public var datagramsAboveLimit: Int { state.withLock { $0.aboveLimit } }

    /// Restarts the `largest` figure of ``statistics``.
    public func resetLargest() { state.withLock { $0.largest = 0 } }

    public func start(receive: @escaping @Sendable ([UInt8]) -> Void) {
        let early = state.withLock { state in
            state.receive = Receiver(receive)
            defer { state.early.removeAll() }
            return state.early
        }
        for datagram in early { receive(datagram) }
    }

    /// Number of datagrams sent from this end, how many of them the impairment dropped, and the
    /// size of the largest.
    public var statistics: (sent: Int, dropped: Int, largest: Int) {
        state.withLock { ($0.sent, $0.dropped, $0.largest) }
    }

    public func send(_ datagram: [UInt8]) {
        guard let peer = peer.withLock({ $0 }) else { return }
        let batch: [[UInt8]] = state.withLock { state in
            guard !state.closed else { return [] }
            state.sent += 1
            state.largest = max(state.largest, datagram.count)
            if let limit = state.limit, datagram.count > limit { state.aboveLimit += 1 }
            if impairment.loss > 0, state.random.nextUnit() < impairment.loss {
                state.dropped += 1
                return []
            }
            var out: [[UInt8]] = []
            if impairment.reordering > 0, state.held == nil, state.random.nextUnit() < impairment.reordering {
                state.held = datagram
                return []
            }
            out.append(datagram)
            if impairment.duplication > 0, state.random.nextUnit() < impairment.duplication { out.append(datagram) }
            if let held = state.held {
                out.append(held)
                state.held = nil
            }
            return out
        }
        guard !batch.isEmpty else { return }
        peer.deliver(batch)
    }

    private func deliver(_ batch: [[UInt8]]) {
        let receiver: Receiver? = state.withLock { state in
            guard !state.closed else { return nil }
            if state.receive == nil { state.early = Array((state.early + batch).prefix(64)) }
            return state.receive
        }
        guard let receiver else { return }
        for datagram in batch { receiver.call(datagram) }
    }

    public func close() {
        state.withLock {
            $0.closed = true
            $0.receive = nil
            $0.limitObservers.removeAll()
        }
        peer.withLock { $0 = nil }
    }
}

/// SplitMix64: a tiny seeded generator so impairments are reproducible.
struct SplitMix64: RandomNumberGenerator, Sendable {
    private var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A uniform value in [0, 1).
    mutating func nextUnit() -> Double { Double(next() >> 11) / Double(1 << 53) }
}
