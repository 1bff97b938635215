import Glibc

/// The SOCKS5 listener (RFC 1928, base+5): drives a `SOCKS5ServerMachine` with the client's
/// bytes, dials CONNECT destinations through the route table, serves UDP ASSOCIATE with a
/// `SOCKS5UDPAssociation`, and hands established streams to a relay. Optional RFC 1929
/// username/password from the config's `socksUsers`.
struct SOCKS5Front: CaptureFront {
    let name: String
    let mode: ForwardMode
    let context: GateContext

    func serve(_ conn: ClientConn) async {
        let users = context.config.socksUsers
        var machine = SOCKS5ServerMachine(authMode: users.isEmpty ? .none : .usernamePassword)
        let deadline = context.handshakeDeadline
        do {
            while true {
                guard try await conn.read(max: 4096, deadline: deadline) else {
                    conn.close()
                    return
                }
                var actions = machine.receive(conn.takeInbox())
                while !actions.isEmpty {
                    let action = actions.removeFirst()
                    switch action {
                    case .send(let bytes):
                        try await conn.write(bytes, deadline: deadline)
                    case .verifyCredentials(let user, let password):
                        actions = machine.credentialsVerified(users[user] == password) + actions
                    case .refuse(_, let error, let reply):
                        GateMetrics.shared.handshakeFailures.increment()
                        context.log.info("socks5 refused", metadata: ["src": "\(conn.peer)", "error": "\(error)"])
                        try? await conn.write(reply, deadline: deadline)
                        conn.close()
                        return
                    case .close(let error):
                        GateMetrics.shared.handshakeFailures.increment()
                        context.log.info("socks5 closed", metadata: ["src": "\(conn.peer)", "error": "\(error)"])
                        conn.close()
                        return
                    case .connect(let destination):
                        await connect(conn, &machine, destination, deadline: deadline)
                        return
                    case .udpAssociate:
                        await associate(conn, &machine, deadline: deadline)
                        return
                    }
                }
            }
        } catch {
            context.log.info("socks5 handshake failed", metadata: ["src": "\(conn.peer)", "error": "\(error)"])
            conn.close(reset: true)
        }
    }

    private func connect(_ conn: ClientConn, _ machine: inout SOCKS5ServerMachine, _ destination: Destination, deadline: UInt64) async {
        let info = StreamInfo(listener: name, source: conn.peer, destination: destination, serverName: SocketAddress.isLiteral(destination.host) ? nil : destination.host)
        do {
            let (opened, upstream) = try await context.open(info)
            do {
                try await conn.write(machine.connected(bound: opened.boundAddress), deadline: deadline)
            } catch {
                opened.abort()
                conn.close(reset: true)
                return
            }
            context.relay(conn, upstream: opened, info: info, upstreamName: upstream, mode: mode, prefix: machine.takeBufferedPayload())
        } catch {
            context.log.info("socks5 connect failed", metadata: ["src": "\(conn.peer)", "dst": "\(destination)", "error": "\(error)"])
            try? await conn.write(machine.failed(SOCKS5Front.replyCode(for: error)), deadline: deadline)
            conn.close()
        }
    }

    /// The reply code for a failed dial (RFC 1928 §6).
    static func replyCode(for error: any Error) -> SOCKS5ReplyCode {
        if let error = error as? any UpstreamStatusError {
            switch error.upstreamStatus {
            case 403?: return .notAllowed
            case 502?, 503?: return .hostUnreachable
            case 504?: return .ttlExpired
            default: return .generalFailure
            }
        }
        guard let error = error as? GateError else { return .generalFailure }
        switch error.code {
        case .syscall: return SOCKS5ReplyCode(errno: error.errno)
        case .timeout: return .ttlExpired
        case .resolve: return .hostUnreachable
        case .noRoute: return .notAllowed
        default: return .generalFailure
        }
    }

    private func associate(_ conn: ClientConn, _ machine: inout SOCKS5ServerMachine, deadline: UInt64) async {
        guard let local = SocketAddress.local(of: conn.fd), let client = conn.peerAddress else {
            try? await conn.write(machine.failed(.generalFailure), deadline: deadline)
            conn.close()
            return
        }
        do {
            let association = try SOCKS5UDPAssociation(
                control: conn.fd, clientHost: client.host, relayAddress: SocketAddress(host: local.host, port: 0),
                loop: conn.loop, context: context, listener: name)
            _ = conn.handOff()
            let reply = machine.connected(bound: association.boundAddress.destination)
            // The control connection is quiet after the reply; a blocking-free single write suffices.
            let sent = reply.withUnsafeBytes { Sys.write(association.control, $0.baseAddress!, $0.count) }
            guard case .bytes(reply.count) = sent else {
                conn.loop.execute { association.close(reason: "reply not sent") }
                return
            }
            conn.loop.execute { association.start() }
        } catch {
            context.log.info("socks5 udp associate failed", metadata: ["src": "\(conn.peer)", "error": "\(error)"])
            try? await conn.write(machine.failed(.generalFailure), deadline: deadline)
            conn.close()
        }
    }
}
