/// A data-only WebRTC session description: one `m=application … UDP/DTLS/SCTP
/// webrtc-datachannel` section ([RFC 8866](https://www.rfc-editor.org/rfc/rfc8866),
/// [RFC 8841](https://www.rfc-editor.org/rfc/rfc8841), [RFC 8839](https://www.rfc-editor.org/rfc/rfc8839)).
///
/// Only the fields below are kept: attributes we do not understand are dropped on parsing and so
/// are never echoed back.
public struct SessionDescription: Sendable, Equatable {
    /// The DTLS `a=setup` value ([RFC 4145 §4](https://www.rfc-editor.org/rfc/rfc4145#section-4)).
    public enum Setup: String, Sendable, Equatable {
        case actpass, active, passive, holdconn
    }

    /// `o=` session id (decimal digits).
    public var sessionID: String
    /// `o=` session version.
    public var sessionVersion: UInt64
    /// `a=ice-ufrag` (4–256 ICE characters).
    public var iceUfrag: String
    /// `a=ice-pwd` (22–256 ICE characters).
    public var icePwd: String
    /// `a=ice-options` tokens, e.g. `trickle`.
    public var iceOptions: [String]
    /// `a=ice-lite` present.
    public var iceLite: Bool
    /// `a=fingerprint` values (session or media level).
    public var fingerprints: [CertificateFingerprint]
    /// `a=setup`.
    public var setup: Setup
    /// `a=mid`, if any (also the BUNDLE group member).
    public var mid: String?
    /// `a=sctp-port`, or the `a=sctpmap` port of the legacy form (default 5000).
    public var sctpPort: UInt16
    /// `a=max-message-size`; nil when absent (then 65536 applies, RFC 8841 §6.1; 0 = no limit).
    public var maxMessageSize: Int?
    /// `a=ugate-max-datagram-size` (ugate's own attribute, see ``maxDatagramSizeAttribute``):
    /// the largest UDP payload the described endpoint accepts once DTLS is up; nil when absent
    /// (every foreign stack), which keeps both sides at the handshake MTU of ≈ 1200 bytes.
    public var maxDatagramSize: Int?
    /// `a=candidate` values, each starting with `candidate:`.
    public var candidates: [String]
    /// `a=end-of-candidates` present.
    public var endOfCandidates: Bool
    /// The input used the legacy `DTLS/SCTP <port>` + `a=sctpmap` form (we always emit RFC 8841).
    public var usedLegacySCTPMap: Bool

    /// Creates a description; see ``offer(iceUfrag:icePwd:fingerprints:sctpPort:maxMessageSize:maxDatagramSize:candidates:endOfCandidates:trickle:)``.
    public init(sessionID: String = SessionDescription.randomSessionID(), sessionVersion: UInt64 = 2,
                iceUfrag: String, icePwd: String, iceOptions: [String] = ["trickle"], iceLite: Bool = false,
                fingerprints: [CertificateFingerprint], setup: Setup, mid: String? = "0",
                sctpPort: UInt16 = 5000, maxMessageSize: Int? = 262_144, maxDatagramSize: Int? = nil,
                candidates: [String] = [], endOfCandidates: Bool = false, usedLegacySCTPMap: Bool = false) {
        self.sessionID = sessionID
        self.sessionVersion = sessionVersion
        self.iceUfrag = iceUfrag
        self.icePwd = icePwd
        self.iceOptions = iceOptions
        self.iceLite = iceLite
        self.fingerprints = fingerprints
        self.setup = setup
        self.mid = mid
        self.sctpPort = sctpPort
        self.maxMessageSize = maxMessageSize
        self.maxDatagramSize = maxDatagramSize
        self.candidates = candidates
        self.endOfCandidates = endOfCandidates
        self.usedLegacySCTPMap = usedLegacySCTPMap
    }

    /// Name of ugate's media-level attribute `a=ugate-max-datagram-size:<bytes> <ice-ufrag>`: the
    /// largest datagram (UDP payload) this endpoint accepts after the DTLS handshake, bound to the
    /// description's own `a=ice-ufrag`. Foreign stacks ignore unknown attributes (RFC 8866 §5.13)
    /// and never send it, so with them both sides stay at the handshake MTU; two ugate peers use
    /// the smaller of both values, capped by the selected path's MTU (docs/datachannel.md,
    /// "Datagram size"). A value bound to another ufrag is an echo of the other side's line (some
    /// stacks copy an offer's unknown attributes into their answer) and is ignored on parsing.
    public static let maxDatagramSizeAttribute = "ugate-max-datagram-size"
    /// Values `a=ugate-max-datagram-size` may carry: at least the 1200 bytes every WebRTC path
    /// must carry, at most the largest UDP payload over IPv4.
    public static let maxDatagramSizeRange = 1200...65_507

    /// The largest message the described endpoint accepts (RFC 8841 §6.1); 0 means no limit.
    public var effectiveMaxMessageSize: Int { maxMessageSize ?? 65_536 }

    /// An offer (`a=setup:actpass`) for a data-only session.
    public static func offer(iceUfrag: String, icePwd: String, fingerprints: [CertificateFingerprint],
                             sctpPort: UInt16 = 5000, maxMessageSize: Int = 262_144, maxDatagramSize: Int? = nil,
                             candidates: [String] = [], endOfCandidates: Bool = false,
                             trickle: Bool = true) -> SessionDescription {
        SessionDescription(iceUfrag: iceUfrag, icePwd: icePwd, iceOptions: trickle ? ["trickle"] : [],
                           fingerprints: fingerprints, setup: .actpass, mid: "0", sctpPort: sctpPort,
                           maxMessageSize: maxMessageSize, maxDatagramSize: maxDatagramSize,
                           candidates: candidates, endOfCandidates: endOfCandidates)
    }

    /// An answer to this offer: mirrors its `mid` (and nothing else of it: our own
    /// `maxDatagramSize` is ours, whether the offer has one or not), and takes `active` when the offer says
    /// `actpass` (RFC 8842 §5.3), the opposite role otherwise.
    public func answer(iceUfrag: String, icePwd: String, fingerprints: [CertificateFingerprint],
                       sctpPort: UInt16 = 5000, maxMessageSize: Int = 262_144, maxDatagramSize: Int? = nil,
                       candidates: [String] = [], endOfCandidates: Bool = false,
                       trickle: Bool = true) throws(SDPError) -> SessionDescription {
        let setup: Setup
        switch self.setup {
        case .actpass, .passive: setup = .active
        case .active: setup = .passive
        case .holdconn: throw SDPError(line: 0, text: "", reason: "the offer says a=setup:holdconn; no DTLS connection can be made")
        }
        return SessionDescription(iceUfrag: iceUfrag, icePwd: icePwd, iceOptions: trickle ? ["trickle"] : [],
                                  fingerprints: fingerprints, setup: setup, mid: mid, sctpPort: sctpPort,
                                  maxMessageSize: maxMessageSize, maxDatagramSize: maxDatagramSize,
                                  candidates: candidates, endOfCandidates: endOfCandidates)
    }

    /// Our DTLS role given our `a=setup` and the peer's (RFC 8842 §5): `active` is the client.
    public static func dtlsRole(local: Setup, remote: Setup) -> DTLSRole? {
        switch (local, remote) {
        case (.active, .passive), (.active, .actpass), (.actpass, .passive): return .client
        case (.passive, .active), (.passive, .actpass), (.actpass, .active): return .server
        default: return nil
        }
    }

    /// A random 19-digit session id, as browsers use.
    public static func randomSessionID() -> String {
        String(UInt64.random(in: 1_000_000_000_000_000_000...9_000_000_000_000_000_000))
    }

    /// Random ICE credentials: an 8-character ufrag and a 24-character password (RFC 8839 §5.4).
    public static func randomICECredentials() -> (ufrag: String, pwd: String) {
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
        func random(_ count: Int) -> String { String((0..<count).map { _ in alphabet.randomElement()! }) }
        return (random(8), random(24))
    }
}

/// The JSON shape of `RTCSessionDescription.toJSON()`: `{"type":"offer","sdp":"…"}`.
public struct SessionDescriptionMessage: Codable, Sendable, Equatable {
    /// `offer`, `answer`, `pranswer` or `rollback`.
    public var type: String
    /// The SDP text.
    public var sdp: String

    /// Creates a message.
    public init(type: String, sdp: String) {
        self.type = type
        self.sdp = sdp
    }
}
