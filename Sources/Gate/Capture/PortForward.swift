/// `":P"` listeners: every connection goes to a fixed destination (`forwardTo`), subject to
/// the route table (which may send it to a named upstream instead of a direct dial).
struct PortForwardFront: CaptureFront {
    let name: String
    let destination: Destination
    let mode: ForwardMode
    let sniff: Bool
    let context: GateContext

    func serveOnLoop(_ conn: ClientConn) -> Bool {
        !sniff && context.forwardOnLoop(conn, info: StreamInfo(listener: name, source: conn.peer, destination: destination), mode: mode)
    }

    func serve(_ conn: ClientConn) async {
        var info = StreamInfo(listener: name, source: conn.peer, destination: destination)
        if sniff, case .reject(let why) = await Sniffing.peek(conn, into: &info, context: context) {
            context.reject(conn, info: info, why: why)
            return
        }
        await context.forward(conn, info: info, mode: mode)
    }
}

/// REDIRECT and TPROXY listeners: the destination is the one the client dialled, recovered
/// with `SO_ORIGINAL_DST` (REDIRECT) or read from the socket's local address (TPROXY).
struct CaptureRedirectFront: CaptureFront {
    let name: String
    let listenAddress: SocketAddress
    let transparent: Bool
    let mode: ForwardMode
    let sniff: Bool
    let context: GateContext

    func serve(_ conn: ClientConn) async {
        let original = transparent ? SocketAddress.local(of: conn.fd) : SocketAddress.originalDestination(of: conn.fd)
        guard let original, !isListener(original) else {
            // Not redirected (someone connected to the port itself): forwarding would loop.
            context.log.info("no original destination", metadata: ["listener": "\(name)", "src": "\(conn.peer)"])
            conn.close(reset: true)
            return
        }
        var info = StreamInfo(listener: name, source: conn.peer, destination: original.destination)
        if sniff, case .reject(let why) = await Sniffing.peek(conn, into: &info, context: context) {
            context.reject(conn, info: info, why: why)
            return
        }
        await context.forward(conn, info: info, mode: mode)
    }

    private func isListener(_ address: SocketAddress) -> Bool {
        guard address.port == listenAddress.port else { return false }
        return address.host == listenAddress.host || listenAddress.host == "0.0.0.0" || listenAddress.host == "::"
            || address.host == "127.0.0.1" || address.host == "::1"
    }
}
