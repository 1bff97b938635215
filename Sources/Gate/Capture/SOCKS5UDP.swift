import Glibc

/// One SOCKS5 UDP ASSOCIATE (RFC 1928 §7): a relay socket for the client, outbound sockets
/// for the destinations, a NAT table of the destinations the client sent to (only their
/// replies are relayed back, under the address the client sent to; entries expire when
/// idle), alive while the control TCP connection is open. Each destination goes through the
/// route table (`GateContext.udpRoute`): refused ones are dropped, logged once each.
/// Loop-thread only after `start`.
final class SOCKS5UDPAssociation: LoopHandler, @unchecked Sendable {  // state is touched only on `loop`'s thread after start
    let control: Int32
    let relay: Int32
    let boundAddress: SocketAddress
    private let clientHost: String
    private let loop: GateLoop
    private let context: GateContext
    private let listener: String
    private var clientUDP: SocketAddress?
    private var outbound: [Bool: Int32] = [:]  // keyed by isIPv6
    /// Remote address → last datagram time and, when a route rewrote the destination, the
    /// one the client addressed (its replies carry that in their SOCKS header).
    private var flows: [SocketAddress: (lastSeen: UInt64, shownAs: Destination?)] = [:]
    private var refused: Set<Destination> = []
    private var resolved: [String: SocketAddress] = [:]
    private var buffer = [UInt8](repeating: 0, count: Datagram.maxSize)
    private var closed = false
    private var bytesUp: UInt64 = 0
    private var bytesDown: UInt64 = 0

    init(control: Int32, clientHost: String, relayAddress: SocketAddress, loop: GateLoop, context: GateContext, listener: String) throws {
        relay = try Sys.listen(relayAddress, udp: true)
        self.control = control
        boundAddress = SocketAddress.local(of: relay) ?? relayAddress
        self.clientHost = clientHost
        self.loop = loop
        self.context = context
        self.listener = listener
    }

    func start() {
        guard loop.register(control, Interest.read, self), loop.register(relay, Interest.read, self) else {
            close(reason: "epoll_ctl failed")
            return
        }
        scheduleSweep()
    }

    private func scheduleSweep() {
        loop.schedule(afterMillis: 1000) { [self] in
            guard !closed else { return }
            let limit = UInt64(context.config.udpIdleTimeout * 1000)
            flows = flows.filter { loop.now - $0.value.lastSeen <= limit }
            scheduleSweep()
        }
    }

    func ready(fd: Int32, events: UInt32) {
        if closed { return }
        if fd == control {
            var scratch = [UInt8](repeating: 0, count: 512)
            switch scratch.withUnsafeMutableBytes({ Sys.read(control, $0.baseAddress!, $0.count) }) {
            case .bytes, .wouldBlock: return
            case .eof: close(reason: "control connection closed")
            case .error(let e): close(reason: "control connection: \(String(cString: strerror(e)))")
            }
            return
        }
        for _ in 0..<64 {
            guard let (n, from) = Datagram.receive(fd, into: &buffer) else { return }
            if fd == relay {
                fromClient(n, from)
            } else if let flow = flows[from], let clientUDP {
                flows[from]!.lastSeen = loop.now
                bytesDown += UInt64(n)
                let packet = SOCKS5UDPHeader(destination: flow.shownAs ?? from.destination).encoded() + buffer[0..<n]
                _ = packet.withUnsafeBytes { Datagram.send(relay, $0, to: clientUDP) }
            }
        }
    }

    private func fromClient(_ n: Int, _ from: SocketAddress) {
        // Only the client that opened the association may use it (RFC 1928 §7).
        guard from.host == clientHost else { return }
        if clientUDP == nil { clientUDP = from }
        guard from == clientUDP else { return }
        guard case .done(let header, let consumed) = SOCKS5UDPHeader.parse(buffer[0..<n]) else { return }
        let payload = Array(buffer[consumed..<n])
        let asked = header.destination
        guard !refused.contains(asked) else { return }
        let destination: Destination
        do {
            destination = try context.udpRoute(StreamInfo(listener: listener, source: from.description, destination: asked, proto: "udp"))
        } catch {
            refused.insert(asked)
            context.udpRefused(listener: listener, source: from, destination: asked, error)
            return
        }
        let shownAs = destination == asked ? nil : asked
        if let literal = try? SocketAddress(host: destination.host, port: destination.port) {
            send(payload, to: literal, shownAs: shownAs)
        } else if let cached = resolved[destination.host] {
            send(payload, to: try! SocketAddress(host: cached.host, port: destination.port), shownAs: shownAs)
        } else {
            Task { [self] in
                guard let address = try? await Resolver.resolve(destination).first else { return }
                loop.execute { [self] in
                    resolved[destination.host] = address
                    send(payload, to: address, shownAs: shownAs)
                }
            }
        }
    }

    private func send(_ payload: [UInt8], to destination: SocketAddress, shownAs: Destination?) {
        guard !closed else { return }
        var out = outbound[destination.isIPv6]
        if out == nil {
            guard let s = try? Datagram.socket(ipv6: destination.isIPv6), loop.register(s, Interest.read, self) else { return }
            outbound[destination.isIPv6] = s
            out = s
        }
        flows[destination] = (loop.now, shownAs)
        bytesUp += UInt64(payload.count)
        _ = payload.withUnsafeBytes { Datagram.send(out!, $0, to: destination) }
    }

    func close(reason: String) {
        guard !closed else { return }
        closed = true
        for fd in [control, relay] + Array(outbound.values) {
            loop.deregister(fd)
            Glibc.close(fd)
        }
        context.accessLog.info(
            "udp association",
            metadata: [
                "listener": "\(listener)", "src": "\(clientUDP?.description ?? clientHost)", "relay": "\(boundAddress)",
                "bytes.up": "\(bytesUp)", "bytes.down": "\(bytesDown)", "end": "\(reason)",
            ])
    }
}
