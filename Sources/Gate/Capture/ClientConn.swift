import Glibc
import Logging

/// A captured client connection during its handshake (SOCKS5, HTTP proxy, sniffing), before
/// it becomes a `Relay`. Reads and writes are non-blocking syscalls; waiting for readiness
/// happens on the connection's `GateLoop`, so a slow client never blocks a thread.
final class ClientConn: @unchecked Sendable {  // used by one Task at a time, then its fd is handed to a Relay
    let fd: Int32
    let loop: GateLoop
    /// The client's address, `host:port`.
    let peer: String
    let peerAddress: SocketAddress?
    /// Bytes read but not consumed by the handshake; they are forwarded first.
    var inbox: [UInt8] = []
    private var owned = true

    init(fd: Int32, loop: GateLoop, peer: SocketAddress?) {
        self.fd = fd
        self.loop = loop
        self.peerAddress = peer
        self.peer = peer?.description ?? "?"
    }

    /// Reads what is available (at most `max` bytes) into `inbox`, waiting until `deadline`
    /// (monotonic ms). Returns false on EOF.
    func read(max: Int = 16384, deadline: UInt64) async throws -> Bool {
        var chunk = [UInt8](repeating: 0, count: max)
        while true {
            switch chunk.withUnsafeMutableBytes({ Sys.read(fd, $0.baseAddress!, $0.count) }) {
            case .bytes(let n):
                inbox += chunk[0..<n]
                return true
            case .eof:
                return false
            case .wouldBlock:
                try await waitUntil(deadline, Interest.read)
            case .error(let e):
                throw GateError(.syscall, "read from \(peer)", errno: e)
            }
        }
    }

    /// Writes all of `bytes`, waiting for writability until `deadline`.
    func write(_ bytes: [UInt8], deadline: UInt64) async throws {
        var offset = 0
        while offset < bytes.count {
            switch bytes.withUnsafeBytes({ Sys.write(fd, $0.baseAddress! + offset, $0.count - offset) }) {
            case .bytes(let n):
                offset += n
            case .wouldBlock, .eof:
                try await waitUntil(deadline, Interest.write)
            case .error(let e):
                throw GateError(.syscall, "write to \(peer)", errno: e)
            }
        }
    }

    private func waitUntil(_ deadline: UInt64, _ events: UInt32) async throws {
        let now = GateLoop.monotonicMillis()
        guard deadline > now else { throw GateError(.timeout, "handshake with \(peer)") }
        try await loop.wait(for: fd, events, timeoutMillis: deadline - now)
    }

    /// Removes and returns the unconsumed bytes.
    func takeInbox() -> [UInt8] {
        defer { inbox = [] }
        return inbox
    }

    /// Gives up ownership of the descriptor (a Relay now owns it).
    func handOff() -> Int32 {
        owned = false
        return fd
    }

    /// Closes the connection: FIN by default, RST when `reset`.
    func close(reset: Bool = false) {
        guard owned else { return }
        owned = false
        if reset { Sys.abort(fd) } else { Glibc.close(fd) }
    }

    deinit {
        close(reset: true)
    }
}
