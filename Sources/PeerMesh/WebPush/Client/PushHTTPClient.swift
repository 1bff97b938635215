import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix

/// A response from a push service.
public struct PushHTTPResponse: Sendable {
    public var status: Int
    public var headers: [(name: String, value: String)]
    public var body: [UInt8]

    /// The first header with this name (case-insensitive).
    public func header(_ name: String) -> String? {
        headers.first { $0.name.caseInsensitiveCompare(name) == .orderedSame }?.value
    }

    /// The body as text, trimmed (push services answer refusals with a sentence).
    public var text: String { String(decoding: body, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines) }
}

/// One keep-alive HTTP/1.1 connection to a push service, used for sequential requests within
/// `PushHTTPClient.withConnection`. Small on purpose: the push protocol needs plain requests with
/// bounded bodies, and the benchmark wants one connection reused without a general client's overhead.
public final class PushHTTPConnection {
    private var inbound: NIOAsyncChannelInboundStream<HTTPClientResponsePart>.AsyncIterator
    private let outbound: NIOAsyncChannelOutboundWriter<HTTPClientRequestPart>
    private let hostHeader: String
    private let maxBodyBytes: Int

    init(inbound: NIOAsyncChannelInboundStream<HTTPClientResponsePart>, outbound: NIOAsyncChannelOutboundWriter<HTTPClientRequestPart>,
         hostHeader: String, maxBodyBytes: Int) {
        self.inbound = inbound.makeAsyncIterator()
        self.outbound = outbound
        self.hostHeader = hostHeader
        self.maxBodyBytes = maxBodyBytes
    }

    /// Sends one request and reads the whole response.
    /// - Throws: `WebPushError.http` when the connection closes early or the body exceeds the bound.
    public func send(_ method: String, _ path: String, headers: [(String, String)] = [], body: [UInt8] = []) async throws -> PushHTTPResponse {
        var h = HTTPHeaders(headers)
        h.replaceOrAdd(name: "Host", value: hostHeader)
        h.replaceOrAdd(name: "Content-Length", value: String(body.count))
        let head = HTTPRequestHead(version: .http1_1, method: HTTPMethod(rawValue: method), uri: path, headers: h)
        var parts: [HTTPClientRequestPart] = [.head(head)]
        if !body.isEmpty { parts.append(.body(.byteBuffer(ByteBuffer(bytes: body)))) }
        parts.append(.end(nil))
        try await outbound.write(contentsOf: parts)
        var status = 0
        var responseHeaders: [(name: String, value: String)] = []
        var responseBody: [UInt8] = []
        while let part = try await inbound.next() {
            switch part {
            case .head(let head):
                status = Int(head.status.code)
                responseHeaders = head.headers.map { ($0.name, $0.value) }
            case .body(var chunk):
                guard responseBody.count + chunk.readableBytes <= maxBodyBytes else {
                    throw WebPushError(.http, "\(method) \(path): response body larger than \(maxBodyBytes) bytes")
                }
                responseBody += chunk.readBytes(length: chunk.readableBytes) ?? []
            case .end:
                return PushHTTPResponse(status: status, headers: responseHeaders, body: responseBody)
            }
        }
        throw WebPushError(.http, "\(method) \(path): connection to \(hostHeader) closed before the response ended")
    }
}

/// Connects to push services over HTTP/1.1 (plain `http://`; the mesh's TLS transport is elsewhere).
public enum PushHTTPClient {
    /// Opens a connection to `url`'s host and port, runs `body` with it, closes it.
    public static func withConnection<R: Sendable>(
        to url: URL, maxBodyBytes: Int = 1 << 20,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        _ body: (PushHTTPConnection) async throws -> R
    ) async throws -> R {
        guard url.scheme?.lowercased() == "http", let host = url.host else {
            throw WebPushError(.http, "only http:// push service URLs are supported here, got \(url)")
        }
        let port = url.port ?? 80
        let channel: NIOAsyncChannel<HTTPClientResponsePart, HTTPClientRequestPart>
        do {
            channel = try await ClientBootstrap(group: group)
                .connectTimeout(.seconds(10))
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                .connect(host: host, port: port) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHTTPClientHandlers()
                        return try NIOAsyncChannel<HTTPClientResponsePart, HTTPClientRequestPart>(wrappingChannelSynchronously: channel)
                    }
                }
        } catch {
            throw WebPushError(.http, "cannot connect to \(host):\(port): \(error)")
        }
        let hostHeader = url.port.map { "\(host):\($0)" } ?? host
        return try await channel.executeThenClose { inbound, outbound in
            try await body(PushHTTPConnection(inbound: inbound, outbound: outbound, hostHeader: hostHeader, maxBodyBytes: maxBodyBytes))
        }
    }

    /// One request on a fresh connection.
    public static func send(_ method: String, _ url: URL, headers: [(String, String)] = [], body: [UInt8] = []) async throws -> PushHTTPResponse {
        try await withConnection(to: url) { try await $0.send(method, pathAndQuery(url), headers: headers, body: body) }
    }

    /// `url`'s path plus query, as a request target.
    public static func pathAndQuery(_ url: URL) -> String {
        let path = url.path.isEmpty ? "/" : url.path
        return url.query.map { path + "?" + $0 } ?? path
    }
}
