import DataChannel
import ICE

/// How a ``PeerConnection`` gathers, signals and sizes its data channels.
public struct PeerConnectionConfiguration: Sendable {
    /// ICE servers, local addresses (add `127.0.0.1` for loopback), relay policy, timeouts.
    public var ice: ICEConfiguration
    /// Trickle ICE (RFC 8838): descriptions carry no candidates; they come as
    /// ``PeerConnection/Event/localCandidate(_:)`` events. Otherwise (the default) creating an
    /// offer or answer waits for gathering to finish and puts every candidate in the SDP.
    public var trickle: Bool
    /// Our `a=max-message-size`: the largest message we accept.
    public var maxMessageSize: Int
    /// Our `a=sctp-port`.
    public var sctpPort: UInt16
    /// The DTLS certificate; a fresh ECDSA P-256 one when nil.
    public var identity: DTLSIdentity?
    /// DTLS record / datagram size of the handshake, and of everything when no larger size is
    /// agreed (keep ≈ 1200 for real paths and TURN).
    public var mtu: Int
    /// Our `a=ugate-max-datagram-size`: the largest datagram we accept once DTLS is up. When the
    /// peer advertises one too (only ugate does), records and SCTP packets grow to the smaller
    /// of both values, capped by the selected pair's kernel path MTU (direct UDP host↔host pairs
    /// only; 1472 over Ethernet, one full 16 KiB record on loopback). A value not above ``mtu``
    /// advertises ``mtu`` (the size stays at ``mtu``; the peer still learns we are ugate); nil
    /// advertises nothing, like a foreign stack. Default: one full DTLS record
    /// (`DataChannelSessionConfiguration.largestRecordDatagram`, 16 449 bytes).
    public var maxDatagramSize: Int?
    /// The ICE loop the agent runs on (``ICEEventLoop/shared`` by default; a loop made with a
    /// `networkNamespace` puts the connection's sockets in that namespace).
    public var iceLoop: ICEEventLoop = .shared
    /// When our SCTP receiver acknowledges DATA. nil (the default) chooses from the remote
    /// description: ``SCTPAcknowledgement/ugatePeer`` when it carries `a=ugate-max-datagram-size`
    /// (a ugate peer, usrsctp), ``SCTPAcknowledgement/foreignPeer`` otherwise.
    public var acknowledgement: SCTPAcknowledgement?

    /// Creates a configuration with the defaults named on each property.
    public init(ice: ICEConfiguration = ICEConfiguration(), trickle: Bool = false,
                maxMessageSize: Int = 262_144, sctpPort: UInt16 = 5000,
                identity: DTLSIdentity? = nil, mtu: Int = 1200,
                maxDatagramSize: Int? = DataChannelSessionConfiguration.largestRecordDatagram) {
        self.ice = ice
        self.trickle = trickle
        self.maxMessageSize = maxMessageSize
        self.sctpPort = sctpPort
        self.identity = identity
        self.mtu = mtu
        self.maxDatagramSize = maxDatagramSize
    }

    /// What goes into our `a=ugate-max-datagram-size`, if anything: at least ``mtu``, so a
    /// ugate peer held at the WebRTC default still says it is one (agreeing on 1200 changes no
    /// size, but chooses the SACK policy for a usrsctp sender, ``acknowledgement``).
    var advertisedMaxDatagramSize: Int? {
        let range = SessionDescription.maxDatagramSizeRange
        guard let maxDatagramSize else { return nil }
        let value = max(maxDatagramSize, mtu)
        return range.contains(value) ? value : (value > range.upperBound ? range.upperBound : nil)
    }
}
