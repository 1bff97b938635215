import Logging
import NIOCore
import NIOHTTP1
import NIOPosix

/// One HTTP request to the admin port (base+0), fully read, body bounded.
public struct AdminRequest: Sendable {
    public var method: String
    /// The request target as sent (path and query).
    public var uri: String
    public var headers: [(name: String, value: String)]
    public var body: [UInt8]
    /// The peer address, `host:port`.
    public var remote: String

    public init(method: String, uri: String, headers: [(name: String, value: String)], body: [UInt8], remote: String) {
        self.method = method
        self.uri = uri
        self.headers = headers
        self.body = body
        self.remote = remote
    }

    /// The path without the query string.
    public var path: String { String(uri.split(separator: "?", maxSplits: 1).first ?? "") }

    /// The query string without `?`, if any.
    public var query: String? {
        let parts = uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
        return parts.count == 2 ? String(parts[1]) : nil
    }

    /// The first header with this name (case-insensitive).
    public func header(_ name: String) -> String? {
        let wanted = name.lowercased()
        return headers.first { $0.name.lowercased() == wanted }?.value
    }
}

/// The answer to an `AdminRequest`.
public struct AdminResponse: Sendable {
    public var status: Int
    public var headers: [(name: String, value: String)]
    public var body: [UInt8]

    public init(status: Int, headers: [(name: String, value: String)] = [], body: [UInt8] = []) {
        self.status = status
        self.headers = headers
        self.body = body
    }

    /// A plain-text response; the message ends with a newline.
    public static func text(_ status: Int, _ message: String) -> AdminResponse {
        AdminResponse(
            status: status, headers: [("Content-Type", "text/plain; charset=utf-8")],
            body: Array((message + "\n").utf8))
    }
}

/// Serves one path prefix of the admin port. Handlers run on Swift concurrency's pool,
/// never on the event loop, so they may await (a push-service long poll, for example).
public typealias AdminHandler = @Sendable (AdminRequest) async -> AdminResponse

/// The node's HTTP/1.1 admin server (base+0): status, metrics, debug and any module's routes
/// (the WebPush service mounts its paths here). Routes match by longest path prefix.
public final class AdminServer: Sendable {
    public struct Route: Sendable {
        public var prefix: String
        public var handler: AdminHandler
        public init(prefix: String, handler: @escaping AdminHandler) {
            self.prefix = prefix
            self.handler = handler
        }
    }

    private let routes: [Route]
    private let maxBodyBytes: Int
    private let logger: Logger
    private let group: any EventLoopGroup

    /// - Parameters:
    ///   - routes: path-prefix routes; the longest matching prefix wins, 404 when none matches.
    ///   - maxBodyBytes: larger request bodies are refused with 413 before the handler runs.
    public init(
        routes: [Route], maxBodyBytes: Int = 1 << 20,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        logger: Logger = Logger(label: "ugate.admin")
    ) {
        self.routes = routes.sorted { $0.prefix.count > $1.prefix.count }
        self.maxBodyBytes = maxBodyBytes
        self.group = group
        self.logger = logger
    }

    /// Binds and starts serving; returns the channel (its local address carries the bound port).
    public func start(host: String, port: Int) async throws -> any Channel {
        let routes = self.routes
        let maxBody = self.maxBodyBytes
        let logger = self.logger
        return try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                    try channel.pipeline.syncOperations.addHandler(
                        AdminHTTPHandler(routes: routes, maxBodyBytes: maxBody, logger: logger))
                }
            }
            .bind(host: host, port: port).get()
    }

    static func route(_ request: AdminRequest, in routes: [Route]) -> Route? {
        let path = request.path
        return routes.first { path == $0.prefix || path.hasPrefix($0.prefix.hasSuffix("/") ? $0.prefix : $0.prefix + "/") }
    }
}

/// Collects one request (head + bounded body), runs the route's handler off the event loop,
/// writes the response; keep-alive as the client asks.
private final class AdminHTTPHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let routes: [AdminServer.Route]
    private let maxBodyBytes: Int
    private let logger: Logger
    private var head: NIOHTTP1.HTTPRequestHead?
    private var body: [UInt8] = []
    private var tooLarge = false

    init(routes: [AdminServer.Route], maxBodyBytes: Int, logger: Logger) {
        self.routes = routes
        self.maxBodyBytes = maxBodyBytes
        self.logger = logger
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let h):
            head = h
            body.removeAll(keepingCapacity: false)
            tooLarge = false
        case .body(var chunk):
            if body.count + chunk.readableBytes > maxBodyBytes {
                tooLarge = true
            } else if let bytes = chunk.readBytes(length: chunk.readableBytes) {
                body += bytes
            }
        case .end:
            guard let head else { return }
            self.head = nil
            let request = AdminRequest(
                method: head.method.rawValue, uri: head.uri,
                headers: head.headers.map { ($0.name, $0.value) }, body: body,
                remote: context.remoteAddress.map { "\($0.ipAddress ?? "?"):\($0.port ?? 0)" } ?? "?")
            body = []
            let keepAlive = head.isKeepAlive
            let version = head.version
            if tooLarge {
                respond(context: context, version: version, keepAlive: false,
                        response: .text(413, "request body larger than \(maxBodyBytes) bytes"))
                return
            }
            guard let route = AdminServer.route(request, in: routes) else {
                respond(context: context, version: version, keepAlive: keepAlive,
                        response: .text(404, "no such path: \(request.path)"))
                return
            }
            let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            let handler = route.handler
            context.eventLoop.makeFutureWithTask { await handler(request) }.whenSuccess { response in
                let (this, context) = loopBound.value
                this.respond(context: context, version: version, keepAlive: keepAlive, response: response)
            }
        }
    }

    private func respond(context: ChannelHandlerContext, version: NIOHTTP1.HTTPVersion, keepAlive: Bool, response: AdminResponse) {
        var headers = HTTPHeaders(response.headers.map { ($0.name, $0.value) })
        headers.replaceOrAdd(name: "Content-Length", value: String(response.body.count))
        headers.replaceOrAdd(name: "Connection", value: keepAlive ? "keep-alive" : "close")
        let head = HTTPResponseHead(version: version, status: HTTPResponseStatus(statusCode: response.status), headers: headers)
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        if !response.body.isEmpty {
            context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: response.body)))), promise: nil)
        }
        let done = context.writeAndFlush(wrapOutboundOut(.end(nil)))
        if !keepAlive {
            let channel = context.channel
            done.whenComplete { _ in channel.close(promise: nil) }
        }
        logger.debug("admin", metadata: ["status": "\(response.status)", "bytes": "\(response.body.count)"])
    }
}
