/// When our SCTP receiver acknowledges DATA (RFC 4960 §6.2 delayed SACK): a SACK after every
/// `packets` DATA packets, or `delayMilliseconds` after the first unacknowledged one, whichever
/// comes first (gaps, duplicates and the first DATA chunk are acknowledged at once regardless);
/// with `merge`, standalone SACKs produced in one loop pass leave as one datagram.
///
/// The right value depends on the sender. usrsctp (ugate) grows its congestion window by bytes
/// acknowledged (`sctp_L2_abc_variable`) and sends whatever the window allows, so one SACK per
/// four packets costs it nothing and saves half the SACK datagrams. Chromium's dcSCTP sends at
/// most `max_burst` = 4 packets per event (a packet received, an application send, a timer —
/// `TransmissionControlBlock::SendBufferedPackets`) and grows its window in slow start by at most
/// one MTU per SACK, and its own receiver acknowledges every second packet (RFC 4960's "at least
/// every second packet").
///
/// `merge` addresses what dominates when we echo: usrsctp sends a pending delayed SACK whenever
/// its output path runs with data queued that the congestion window holds back — after every
/// incoming packet — so a burst of four DATA packets is answered by four back-to-back SACK-only
/// datagrams (measured: 30–37 k per 32 MiB echoed to Chromium, about one per DATA packet,
/// against ≈ 19.5 k from a Chromium echoer). A later SACK carries the newer cumulative TSN and
/// window, so of consecutive gap-free SACK-only packets of one pass only the last is sent
/// (never one with gap blocks or duplicate reports: the sender's fast retransmit counts those).
public struct SCTPAcknowledgement: Sendable, Equatable, CustomStringConvertible {
    /// DATA packets per SACK (usrsctp `sack_freq`, 1…).
    public var packets: Int
    /// Longest delay of a SACK in milliseconds (usrsctp `sack_delay`, 1…500).
    public var delayMilliseconds: Int
    /// Send only the last of consecutive gap-free SACK-only packets produced in one loop pass.
    public var merge: Bool

    /// Creates a setting; values are clamped to what usrsctp accepts (1… packets, 1–500 ms).
    public init(packets: Int, delayMilliseconds: Int, merge: Bool = false) {
        self.packets = max(1, packets)
        self.delayMilliseconds = min(500, max(1, delayMilliseconds))
        self.merge = merge
    }

    /// Towards another usrsctp (a ugate peer): a SACK per four DATA packets, 20 ms at most.
    public static let ugatePeer = SCTPAcknowledgement(packets: 4, delayMilliseconds: 20)
    /// RFC 4960 §6.2 "at least every second packet", 20 ms at most, SACK-only packets of one
    /// pass merged: towards foreign stacks (Chromium's dcSCTP, pion, aiortc).
    public static let foreignPeer = SCTPAcknowledgement(packets: 2, delayMilliseconds: 20, merge: true)

    /// Parses `PACKETS[/DELAY_MS][+merge]` (e.g. `2`, `4/20`, `2/20+merge`); nil when malformed.
    public init?(parsing text: String) {
        var body = Substring(text)
        var merge = false
        if body.hasSuffix("+merge") {
            merge = true
            body = body.dropLast("+merge".count)
        }
        let parts = body.split(separator: "/", omittingEmptySubsequences: false)
        guard (1...2).contains(parts.count), let packets = Int(parts[0]), packets >= 1 else { return nil }
        var delay = 20
        if parts.count == 2 {
            guard let value = Int(parts[1]), (1...500).contains(value) else { return nil }
            delay = value
        }
        self.init(packets: packets, delayMilliseconds: delay, merge: merge)
    }

    /// `PACKETS/DELAY_MS[+merge]`, the form ``init(parsing:)`` reads.
    public var description: String { "\(packets)/\(delayMilliseconds)\(merge ? "+merge" : "")" }

    /// Whether `packet` (a whole SCTP packet) is one SACK chunk without gap blocks or duplicate
    /// TSNs ([RFC 9260 §3.3.4](https://www.rfc-editor.org/rfc/rfc9260#section-3.3.4)), which a
    /// later SACK of the same association supersedes:
    ///
    ///     | common header (12) | type 3 | flags | length 16 | cumulative TSN ack (4) |
    ///     | a_rwnd (4) | gap blocks 0 (2) | duplicate TSNs 0 (2) |
    static func isPlainSACK(_ packet: UnsafeRawBufferPointer) -> Bool {
        guard packet.count == 28, packet[12] == 3, packet[14] == 0, packet[15] == 16 else { return false }
        return packet[24] == 0 && packet[25] == 0 && packet[26] == 0 && packet[27] == 0
    }
}
