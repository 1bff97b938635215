import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import Foundation

/// A kept-alive HTTP/1.1 connection to a backend, on one event loop: a NIO channel
/// (`NIOBackendConnection`, for clients served by NIO) or a raw socket on a gate loop
/// (`LoopBackendConnection`, for the HTTP/1.1 clients served there). `Exchange` and the pool
/// see only this class.
class BackendConnection {
    let destination: Destination
    /// Reads the responses and hands them to `delegate`.
    var reader = BackendResponseReader()
    /// Whether it came from the pool (it may have been closed by the backend meanwhile).
    var reused = false
    var reusable = true
    /// The exchange (or mirror) using it; nil while pooled.
    var delegate: (any BackendDelegate)?

    init(destination: Destination) {
        self.destination = destination
    }

    /// Prepares the reader for the response to a request with `method`; `decodeChunks`: a
    /// chunked body is delivered as its data (HTTP/2 clients) rather than as received;
    /// `keepsFields`: the response head's fields are wanted (`BackendResponseReader.keepsFields`).
    func expectResponse(method: String, decodeChunks: Bool, keepsFields: Bool = true) {
        reader.requestMethod = method
        reader.decodeChunks = decodeChunks
        reader.keepsFields = keepsFields
    }

    /// The loop the connection lives on.
    var eventLoop: any EventLoop { preconditionFailure("BackendConnection is abstract") }
    /// Open (not closed by either side).
    var isActive: Bool { preconditionFailure("BackendConnection is abstract") }

    /// Writes request bytes (flushed by `flush`); `written` is called once they are in the
    /// socket (or the connection failed).
    func write(_ buffer: ByteBuffer, written: (() -> Void)? = nil) { preconditionFailure("BackendConnection is abstract") }
    func flush() { preconditionFailure("BackendConnection is abstract") }
    /// Closes the connection; a delegate still set hears `backendClosed`.
    func close() { preconditionFailure("BackendConnection is abstract") }
    /// The client cannot take more of the response now: stop reading it (until `resumeReading`).
    func pauseReading() { preconditionFailure("BackendConnection is abstract") }
    func resumeReading() { preconditionFailure("BackendConnection is abstract") }
}

/// A backend connection that is a NIO channel (`BackendHandler` reads it).
final class NIOBackendConnection: BackendConnection {
    let channel: any Channel
    #if DEBUG
    private let live = LiveObjects.Token("NIOBackendConnection")
    #endif

    /// The loop of the exchanges that use it and of its pool list: the channel's own, except for
    /// a mesh stream of a connection on another loop (its events hop here, `BackendLoopHop`).
    let loop: any EventLoop

    /// `channel`: a TCP socket (or a socket an upstream dialled), or a mesh stream
    /// (`Upstream.openChannel`).
    init(channel: any Channel, destination: Destination, loop: (any EventLoop)? = nil) {
        self.channel = channel
        self.loop = loop ?? channel.eventLoop
        super.init(destination: destination)
    }

    override var eventLoop: any EventLoop { loop }
    override var isActive: Bool { channel.isActive }

    override func write(_ buffer: ByteBuffer, written: (() -> Void)? = nil) {
        guard let written else { return channel.write(buffer, promise: nil) }
        // A promise of the exchange's loop: `written` runs there (a mesh stream may live on another).
        let promise = loop.makePromise(of: Void.self)
        promise.futureResult.assumeIsolated().whenComplete { _ in written() }
        channel.write(buffer, promise: promise)
    }

    override func flush() { channel.flush() }
    override func close() { channel.close(promise: nil) }
    override func pauseReading() { setAutoRead(false) }
    override func resumeReading() { setAutoRead(true) }

    /// `autoRead` on the channel's own loop (a mesh stream may live on another one than `loop`).
    private func setAutoRead(_ on: Bool) {
        if channel.eventLoop.inEventLoop, let options = channel.syncOptions {
            try? options.setOption(.autoRead, value: on)
        } else {
            channel.setOption(.autoRead, value: on).whenFailure { _ in }
        }
    }
}

/// Reads a backend connection's bytes with a `BackendResponseReader` and delivers the
/// response's head, body and end to the exchange using the connection. Bytes left over (a
/// head or chunk line split between reads) wait for the next read. Bytes from a backend
/// that nobody is waiting for, and malformed responses, close the connection. Its work runs on
/// the connection's `loop`: called by the pipeline, or by `BackendLoopHop` from a mesh stream on
/// another loop (`received`, `readComplete`, `closed`).
final class BackendHandler: BackendChannelEnd {
    typealias InboundIn = ByteBuffer
    /// Strong, cleared when the channel closes (`closed`): a weak reference would give the
    /// connection a side table, every retain and release of it then the runtime's slow path
    /// (see docs/httproute.md, *Hot-path notes*). The connection holds the channel, whose
    /// pipeline holds this handler, until the close.
    var connection: NIOBackendConnection?
    private var leftover: ByteBuffer?

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        received(unwrapInboundIn(data), channel: context.channel)
    }

    /// Bytes read from the backend `channel`.
    func received(_ data: ByteBuffer, channel: any Channel) {
        var buffer = data
        if var earlier = leftover {
            leftover = nil
            earlier.writeBuffer(&buffer)
            buffer = earlier
        }
        guard let connection, let delegate = connection.delegate else {
            channel.close(promise: nil)
            return
        }
        do {
            while true {
                let event = try connection.reader.next(&buffer)
                if case .needMore = event { break }
                delegate.backendRead(event)
                if case .end = event {
                    // The exchange ended: what follows belongs to no request.
                    if buffer.readableBytes > 0 {
                        channel.close(promise: nil)
                        return
                    }
                } else if connection.delegate !== delegate {
                    // The exchange dropped this response to send its request again (it closed
                    // the connection): the rest is discarded.
                    return
                }
            }
        } catch {
            delegate.backendFailed("backend sent an invalid response: \(error)")
            channel.close(promise: nil)
            return
        }
        if buffer.readableBytes > 0 { leftover = buffer }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        readComplete()
    }

    /// The end of a read burst.
    func readComplete() {
        connection?.delegate?.backendReadComplete()
    }

    func channelInactive(context: ChannelHandlerContext) {
        closed()
        context.fireChannelInactive()
    }

    /// The channel closed: a body delimited by the close ends, the exchange learns of it.
    func closed() {
        guard let connection else { return }
        self.connection = nil
        if let delegate = connection.delegate {
            if let end = connection.reader.closed() { delegate.backendRead(end) }
            connection.delegate?.backendClosed(connection)
        }
    }
}

/// Kept-alive backend connections, per event loop and destination (at most `maxIdle` idle
/// ones each). Every method runs on the event loop it is given.
///
/// New connections are dialled by `router` when there is one: a destination the node's route
/// table sends to `direct` (or a `hosts` name) is connected by NIO on the loop; one it sends
/// to another upstream (a mesh peer, `mesh:<name>`) is opened with `Upstream.openChannel` — the
/// mesh's HTTP/2 stream is the backend channel, `BackendHandler` in its pipeline (see
/// `openStream`) — or, for upstreams without channel streams, dialled through `Upstream.dial`
/// and the returned socket adopted as the channel; HTTP/1.1 then runs over the peer's stream.
final class BackendPool: Sendable {
    let maxIdle: Int
    let connectTimeout: Double
    let router: Router?
    let listenerName: String
    private let perLoop: EventLoopBoundBox

    /// Idle connections of one loop, per destination. Each list is an object of its own:
    /// popping from or appending to an array stored in the dictionary went through the
    /// dictionary's `modify` accessor, whose coroutine frame cost two `malloc`s per request.
    final class Box {
        private var idle: [Destination: IdleList] = [:]
        /// The list used last: a loop's requests mostly go to one backend, and comparing its
        /// destination is cheaper than hashing it (SipHash of the host) twice per request
        /// (`takeIdle`, `release`).
        private var last: IdleList?

        /// The list of `destination`, created on first use.
        func list(_ destination: Destination) -> IdleList {
            if let list = existing(destination) { return list }
            let list = IdleList(destination)
            idle[destination] = list
            last = list
            return list
        }

        /// The list of `destination` if there is one.
        func existing(_ destination: Destination) -> IdleList? {
            if let last, last.destination == destination { return last }
            guard let list = idle[destination] else { return nil }
            last = list
            return list
        }
    }

    final class IdleList {
        let destination: Destination
        var connections: [BackendConnection] = []

        init(_ destination: Destination) { self.destination = destination }
    }

    init(maxIdle: Int = 256, connectTimeout: Double = 10, router: Router? = nil, listenerName: String = "httproute") {
        self.maxIdle = maxIdle
        self.connectTimeout = connectTimeout
        self.router = router
        self.listenerName = listenerName
        perLoop = EventLoopBoundBox()
    }

    /// An idle connection to `destination` of `idle`'s loop (called on that loop), nil when
    /// there is none. Synchronous, for the common case: no callback (a closure context per
    /// request) when a kept-alive connection is there.
    func takeIdle(_ destination: Destination, idle box: Box) -> BackendConnection? {
        guard let list = box.existing(destination) else { return nil }
        while let connection = list.connections.popLast() {
            if connection.isActive {
                connection.reused = true
                return connection
            }
        }
        return nil
    }

    /// Calls `completion` on `loop` with a connection to `destination`: an idle one when
    /// there is one (unless `fresh`), else a new one.
    func acquire(
        _ destination: Destination, on loop: any EventLoop, idle: Box? = nil, fresh: Bool = false,
        _ completion: @escaping (Result<BackendConnection, any Error>) -> Void
    ) {
        if !fresh, let connection = takeIdle(destination, idle: idle ?? perLoop.box(for: loop)) {
            completion(.success(connection))
            return
        }
        var target = destination
        if let router {
            let info = StreamInfo(listener: listenerName, source: "httproute", destination: destination, serverName: destination.host, proto: "http/1.1")
            let decision: RouteDecision
            do {
                decision = try router.route(info)
            } catch {
                completion(.failure(error))
                return
            }
            target = decision.destination
            if !(decision.upstream is DirectUpstream) {
                let upstream = decision.upstream
                if openStream(upstream, target, for: info, on: loop, destination: destination, completion) { return }
                let dialTarget = target
                let dialled = Self.dial(upstream, dialTarget, for: info, on: loop, timeout: connectTimeout)
                dialled.assumeIsolated().whenComplete { result in
                    switch result {
                    case .failure(let error):
                        completion(.failure(error))
                    case .success(let fd):
                        if let gate = loop as? GateEventLoop {
                            completion(Result { try self.adopted(fd, destination, on: gate) })
                        } else {
                            self.connected(self.bootstrap(loop, tcp: false).withConnectedSocket(fd), destination, completion)
                        }
                    }
                }
                return
            }
        }
        if let gate = loop as? GateEventLoop {
            connectOnGateLoop(target, destination, on: gate, completion)
            return
        }
        connected(
            bootstrap(loop, tcp: true).connectTimeout(.milliseconds(Int64(connectTimeout * 1000))).connect(host: target.host, port: Int(target.port)),
            destination, completion)
    }

    /// The idle connections of `loop` (called on `loop`).
    func box(for loop: any EventLoop) -> Box {
        perLoop.box(for: loop)
    }

    /// `tcp`: set TCP_NODELAY (an upstream's socket may be one end of a socketpair).
    private func bootstrap(_ loop: any EventLoop, tcp: Bool) -> ClientBootstrap {
        ClientBootstrap(group: loop)
            .channelOption(.socketOption(.tcp_nodelay), value: tcp ? 1 : 0)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(BackendHandler())
                }
            }
    }

    /// Wraps a connected backend channel (on its loop) as a `BackendConnection`.
    private func connected(
        _ future: EventLoopFuture<any Channel>, _ destination: Destination, _ completion: @escaping (Result<BackendConnection, any Error>) -> Void
    ) {
        future.assumeIsolated().whenComplete { result in
            completion(
                result.flatMap { channel in
                    Result {
                        let handler = try channel.pipeline.syncOperations.handler(type: BackendHandler.self)
                        let connection = NIOBackendConnection(channel: channel, destination: destination)
                        handler.connection = connection
                        self.track(connection)
                        return connection as BackendConnection
                    }
                })
        }
    }

    /// Once per connection (on its `loop`): a pooled connection the backend closes leaves its list.
    func track(_ connection: NIOBackendConnection) {
        let list = perLoop.box(for: connection.loop).list(connection.destination)
        connection.channel.closeFuture.hop(to: connection.loop).assumeIsolated().whenComplete { _ in
            list.connections.removeAll { $0 === connection }
        }
    }

    /// Returns a connection whose exchange completed cleanly.
    /// `idle`: the pool's box of the connection's loop, when the caller has it (`box(for:)`).
    func release(_ connection: BackendConnection, idle: Box? = nil) {
        guard connection.isActive else { return }
        let list = (idle ?? perLoop.box(for: connection.eventLoop)).list(connection.destination)
        guard list.connections.count < maxIdle else {
            connection.close()
            return
        }
        list.connections.append(connection)
    }

    /// RequestMirror: sends a copy of the request (`head`: its serialized head, which asks
    /// for `Connection: close`; then `body`) to `destination` on a new connection of its own
    /// and ignores the answer; failures are logged at debug level only, so the mirror never
    /// slows or breaks the primary request.
    func mirror(_ head: ByteBuffer, method: String, body: [ByteBuffer], to destination: Destination, on loop: any EventLoop, log: Logger) {
        acquire(destination, on: loop, fresh: true) { result in
            switch result {
            case .failure(let error):
                log.debug("mirror failed", metadata: ["backend": "\(destination)", "error": "\(error)"])
            case .success(let connection):
                // The sink keeps the connection until its answer ends or it closes.
                connection.delegate = MirrorSink(connection)
                connection.expectResponse(method: method, decodeChunks: false)
                connection.write(head)
                for part in body { connection.write(part) }
                connection.flush()
                loop.assumeIsolated().scheduleTask(in: .seconds(30)) { connection.close() }
            }
        }
    }
}

/// Reads and drops a mirror backend's answer; closes the connection when it ends.
final class MirrorSink: BackendDelegate {
    let connection: BackendConnection
    init(_ connection: BackendConnection) { self.connection = connection }

    func backendRead(_ event: BackendResponseReader.Event) {
        if case .end = event { connection.close() }
    }

    func backendReadComplete() {}

    func backendFailed(_ message: String) {}

    func backendClosed(_ connection: BackendConnection) {
        connection.delegate = nil
    }
}

/// One `BackendPool.Box` per event loop, created on first use on that loop.
final class EventLoopBoundBox: @unchecked Sendable {  // boxes are only touched on their own loop; the dictionary is behind the lock
    private let lock = NSLock()
    private var boxes: [ObjectIdentifier: BackendPool.Box] = [:]

    func box(for loop: any EventLoop) -> BackendPool.Box {
        loop.preconditionInEventLoop()
        return lock.withLock {
            let key = ObjectIdentifier(loop)
            if let box = boxes[key] { return box }
            let box = BackendPool.Box()
            boxes[key] = box
            return box
        }
    }
}
