/// The server side of a SOCKS5 handshake (RFC 1928, RFC 1929) as a value type: bytes in,
/// actions out; no sockets.
///
/// ```
/// greeting ──► [credentials ──► verifying] ──► request ──► awaiting outcome ──► established
///     │              │              │             │               │
///     └──────────────┴──────────────┴─────────────┴───────────────┴──► closed
/// ```
///
/// Use: feed every received chunk to `receive(_:)` and perform the actions in order. After
/// `.connect` / `.udpAssociate`, dial and call `connected(bound:)` or `failed(_:)` and send
/// the bytes they return. Bytes the client sent after its request (pipelined payload) stay
/// in the machine until `takeBufferedPayload()`; forward them before anything read later.
public struct SOCKS5ServerMachine: Sendable {
    /// How clients must authenticate.
    public enum AuthMode: Sendable, Hashable {
        /// Method X'00': no authentication.
        case none
        /// Method X'02': RFC 1929 username/password, required.
        case usernamePassword
    }

    /// What the I/O layer must do next.
    public enum Action: Sendable, Hashable {
        /// Write these bytes to the client.
        case send([UInt8])
        /// Check these credentials, then call `credentialsVerified(_:)`.
        case verifyCredentials(username: String, password: String)
        /// Open a TCP connection to the destination, then call `connected(bound:)` or `failed(_:)`.
        case connect(Destination)
        /// Open a UDP relay for the client (which says it will send from `Destination`, often
        /// 0.0.0.0:0), then call `connected(bound:)` with the relay's address, or `failed(_:)`.
        case udpAssociate(Destination)
        /// Write `reply` (a SOCKS5 reply carrying `code`) to the client, then close.
        case refuse(SOCKS5ReplyCode, WireError, reply: [UInt8])
        /// Close the connection (after writing any `.send` that came before this action).
        case close(WireError)
    }

    private enum State: Sendable, Hashable {
        case awaitingGreeting
        case awaitingCredentials
        case verifyingCredentials
        case awaitingRequest
        case awaitingOutcome(SOCKS5Command)
        case established
        case closed
    }

    public let authMode: AuthMode
    /// Most bytes the machine holds while it waits (for credential checks or the dial).
    /// A client that pipelines more is closed; the I/O layer should stop reading while
    /// an outcome is pending instead.
    public let maxBufferedBytes: Int
    private var state: State = .awaitingGreeting
    private var buffer: [UInt8] = []
    /// The request being served, once one was accepted.
    public private(set) var request: SOCKS5Request?
    /// The username that authenticated, when the mode is `.usernamePassword`.
    public private(set) var username: String?

    public init(authMode: AuthMode, maxBufferedBytes: Int = 64 * 1024) {
        self.authMode = authMode
        self.maxBufferedBytes = maxBufferedBytes
    }

    /// True once a success reply was produced: the connection now carries payload.
    public var isEstablished: Bool { state == .established }
    /// True once the machine produced a closing action.
    public var isClosed: Bool { state == .closed }

    /// Feeds bytes received from the client.
    public mutating func receive(_ bytes: some Collection<UInt8>) -> [Action] {
        guard state != .closed else { return [] }
        buffer.append(contentsOf: bytes)
        return advance()
    }

    /// The I/O layer's answer to `.verifyCredentials`.
    public mutating func credentialsVerified(_ ok: Bool) -> [Action] {
        guard state == .verifyingCredentials else {
            return [close(WireError(.unexpectedMessage, "SOCKS5 credentials verified while not verifying"))]
        }
        guard ok else {
            return [
                .send(SOCKS5UsernamePasswordResponse(success: false).encoded()),
                close(WireError(.authenticationFailed, "SOCKS5 username/password rejected for user \"\(username ?? "")\"")),
            ]
        }
        state = .awaitingRequest
        return [.send(SOCKS5UsernamePasswordResponse(success: true).encoded())] + advance()
    }

    /// The dial (or UDP relay) succeeded: returns the success reply to send. `bound` is the
    /// local address of the outbound socket (CONNECT) or the relay's address (UDP ASSOCIATE).
    public mutating func connected(bound: Destination) -> [UInt8] {
        guard case .awaitingOutcome = state else { return [] }
        state = .established
        return SOCKS5Reply(code: .succeeded, bound: bound).encoded()
    }

    /// The dial failed: returns the failure reply to send before closing.
    /// `SOCKS5ReplyCode(errno:)` maps a socket error to the code.
    public mutating func failed(_ code: SOCKS5ReplyCode) -> [UInt8] {
        guard case .awaitingOutcome = state else { return [] }
        state = .closed
        return SOCKS5Reply(code: code).encoded()
    }

    /// Returns and forgets the bytes the client sent after its request.
    public mutating func takeBufferedPayload() -> [UInt8] {
        guard state == .established || isAwaitingOutcome else { return [] }
        defer { buffer = [] }
        return buffer
    }

    private var isAwaitingOutcome: Bool {
        if case .awaitingOutcome = state { return true }
        return false
    }

    private mutating func close(_ error: WireError) -> Action {
        state = .closed
        buffer = []
        return .close(error)
    }

    private mutating func refuse(_ code: SOCKS5ReplyCode, _ error: WireError) -> Action {
        state = .closed
        buffer = []
        return .refuse(code, error, reply: SOCKS5Reply(code: code).encoded())
    }

    /// Parses as many messages as the buffer holds and the state allows.
    private mutating func advance() -> [Action] {
        var actions: [Action] = []
        while true {
            switch state {
            case .awaitingGreeting:
                switch SOCKS5Greeting.parse(buffer) {
                case .needMore: return actions
                case .invalid(let error): return actions + [close(error)]
                case .done(let greeting, let consumed):
                    buffer.removeFirst(consumed)
                    let wanted: SOCKS5Method = authMode == .none ? .noAuthentication : .usernamePassword
                    guard greeting.methods.contains(wanted) else {
                        let offered = greeting.methods.map(\.description).joined(separator: ", ")
                        return actions + [
                            .send(SOCKS5MethodSelection(method: .noAcceptable).encoded()),
                            close(WireError(.noAcceptableMethod, "SOCKS5 client offered methods [\(offered)], server requires \(wanted)")),
                        ]
                    }
                    actions.append(.send(SOCKS5MethodSelection(method: wanted).encoded()))
                    state = authMode == .none ? .awaitingRequest : .awaitingCredentials
                }
            case .awaitingCredentials:
                switch SOCKS5UsernamePasswordRequest.parse(buffer) {
                case .needMore: return actions
                case .invalid(let error):
                    return actions + [.send(SOCKS5UsernamePasswordResponse(success: false).encoded()), close(error)]
                case .done(let credentials, let consumed):
                    buffer.removeFirst(consumed)
                    username = credentials.username
                    state = .verifyingCredentials
                    return actions + [.verifyCredentials(username: credentials.username, password: credentials.password)]
                }
            case .awaitingRequest:
                switch SOCKS5Request.parse(buffer) {
                case .needMore: return actions
                case .invalid(let error):
                    if error.code == .unsupportedVersion { return actions + [close(error)] }
                    return actions + [refuse(SOCKS5ReplyCode(error: error), error)]
                case .done(let parsed, let consumed):
                    buffer.removeFirst(consumed)
                    switch parsed.command {
                    case .bind:
                        return actions + [refuse(.commandNotSupported, WireError(.unsupportedCommand, "SOCKS5 BIND not supported"))]
                    case .connect:
                        request = parsed
                        state = .awaitingOutcome(.connect)
                        return actions + [.connect(parsed.destination)]
                    case .udpAssociate:
                        request = parsed
                        state = .awaitingOutcome(.udpAssociate)
                        return actions + [.udpAssociate(parsed.destination)]
                    }
                }
            case .verifyingCredentials, .awaitingOutcome:
                guard buffer.count <= maxBufferedBytes else {
                    return actions + [close(WireError(.tooLarge, "SOCKS5 client sent \(buffer.count) bytes before the handshake finished (limit \(maxBufferedBytes))"))]
                }
                return actions
            case .established, .closed:
                return actions
            }
        }
    }
}
