/// The HTTP proxy listener (base+2): `CONNECT host:port` opens a tunnel; an absolute-URI
/// request (`GET http://host/path`) is rewritten to origin-form with hop-by-hop fields removed
/// and `Connection: close`, and forwarded; the response ends the connection.
/// Failures answer 400 (bad request), 403 (no route), 502 (connect failed), 504 (timeout).
struct HTTPProxyFront: CaptureFront {
    let name: String
    let mode: ForwardMode
    let context: GateContext

    func serve(_ conn: ClientConn) async {
        let deadline = context.handshakeDeadline
        do {
            while true {
                switch HTTPRequestHead.parse(conn.inbox) {
                case .needMore:
                    guard try await conn.read(deadline: deadline) else {
                        conn.close()
                        return
                    }
                case .invalid(let error):
                    await refuse(conn, HTTPResponseWriter.error(error), "\(error)", deadline: deadline)
                    return
                case .done(let head, let consumed):
                    conn.inbox.removeFirst(consumed)
                    await proxy(conn, head, deadline: deadline)
                    return
                }
            }
        } catch {
            context.log.info("http proxy handshake failed", metadata: ["src": "\(conn.peer)", "error": "\(error)"])
            conn.close(reset: true)
        }
    }

    private func proxy(_ conn: ClientConn, _ head: HTTPRequestHead, deadline: UInt64) async {
        let target: HTTPProxyTarget
        do {
            target = try head.proxyTarget()
        } catch {
            await refuse(conn, HTTPResponseWriter.error(error), "\(error)", deadline: deadline)
            return
        }
        let destination: Destination
        var prefix: [UInt8] = []
        switch target {
        case .connect(let d):
            destination = d
        case .absolute(let d, _):
            destination = d
            do {
                // The relay cannot tell where a response ends, so the origin closes after it and
                // the client opens a new connection for its next request (possibly to another origin).
                prefix = try head.forwardHead(HTTPForwardOptions(close: true))
            } catch {
                await refuse(conn, HTTPResponseWriter.error(error), "\(error)", deadline: deadline)
                return
            }
        case .origin:
            await refuse(
                conn, HTTPResponseWriter.error(status: 400, message: "this is a proxy: send CONNECT host:port or an absolute URI"),
                "origin-form request", deadline: deadline)
            return
        }
        let info = StreamInfo(
            listener: name, source: conn.peer, destination: destination,
            serverName: SocketAddress.isLiteral(destination.host) ? nil : destination.host, proto: prefix.isEmpty ? "connect" : "http/1.1")
        do {
            let (fd, upstream) = try await context.dial(info)
            if prefix.isEmpty {
                do {
                    try await conn.write(HTTPResponseWriter.connectEstablished(), deadline: deadline)
                } catch {
                    Sys.abort(fd)
                    conn.close(reset: true)
                    return
                }
            }
            context.relay(conn, upstream: fd, info: info, upstreamName: upstream, mode: mode, prefix: prefix)
        } catch {
            let status = HTTPProxyFront.status(for: error)
            await refuse(
                conn, HTTPResponseWriter.error(status: status, message: "connect to \(destination): \(error)"),
                "\(error)", deadline: deadline)
        }
    }

    /// The status for a failed dial: 504 timeout, 403 no route, 502 otherwise.
    static func status(for error: any Error) -> Int {
        guard let error = error as? GateError else { return 502 }
        switch error.code {
        case .timeout: return 504
        case .noRoute: return 403
        case .syscall: return HTTPResponseWriter.status(errno: error.errno)
        default: return 502
        }
    }

    private func refuse(_ conn: ClientConn, _ response: [UInt8], _ why: String, deadline: UInt64) async {
        GateMetrics.shared.handshakeFailures.increment()
        context.log.info("http proxy refused", metadata: ["src": "\(conn.peer)", "error": "\(why)"])
        try? await conn.write(response, deadline: deadline)
        conn.close()
    }
}
