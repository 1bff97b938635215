/// When our SCTP receiver acknowledges DATA (RFC 4960 §6.2 delayed SACK): a SACK after every
/// `packets` DATA packets, or `delayMilliseconds` after the first unacknowledged one, whichever
/// comes first (gaps, duplicates and the first DATA chunk are acknowledged at once regardless).
///
/// The right value depends on the sender. usrsctp (ugate) grows its congestion window by bytes
/// acknowledged (`sctp_L2_abc_variable`) and sends whatever the window allows, so one SACK per
/// four packets costs it nothing and saves half the SACK datagrams. Chromium's dcSCTP sends at
/// most `max_burst` = 4 packets per event (a packet received, an application send, a timer —
/// `TransmissionControlBlock::SendBufferedPackets`) and grows its window in slow start by at most
/// one MTU per SACK: with a SACK per four packets each SACK frees exactly the four packets it
/// may send, so the amount in flight cannot grow from SACKs alone. RFC 4960's "at least every
/// second packet", which dcSCTP's own receiver follows, lets each SACK free two and send four.
public struct SCTPAcknowledgement: Sendable, Equatable, CustomStringConvertible {
    /// DATA packets per SACK (usrsctp `sack_freq`, 1…).
    public var packets: Int
    /// Longest delay of a SACK in milliseconds (usrsctp `sack_delay`, 1…500).
    public var delayMilliseconds: Int

    /// Creates a setting; values are clamped to what usrsctp accepts (1… packets, 1–500 ms).
    public init(packets: Int, delayMilliseconds: Int) {
        self.packets = max(1, packets)
        self.delayMilliseconds = min(500, max(1, delayMilliseconds))
    }

    /// Towards another usrsctp (a ugate peer): a SACK per four DATA packets, 20 ms at most.
    public static let ugatePeer = SCTPAcknowledgement(packets: 4, delayMilliseconds: 20)
    /// RFC 4960 §6.2 "at least every second packet", 20 ms at most: towards foreign stacks,
    /// whose senders (dcSCTP in Chromium) are clocked by SACKs.
    public static let everySecondPacket = SCTPAcknowledgement(packets: 2, delayMilliseconds: 20)

    /// Parses `PACKETS` or `PACKETS/DELAY_MS` (e.g. `2`, `4/20`); nil when malformed.
    public init?(parsing text: String) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard (1...2).contains(parts.count), let packets = Int(parts[0]), packets >= 1 else { return nil }
        var delay = 20
        if parts.count == 2 {
            guard let value = Int(parts[1]), (1...500).contains(value) else { return nil }
            delay = value
        }
        self.init(packets: packets, delayMilliseconds: delay)
    }

    /// `PACKETS/DELAY_MS`, the form ``init(parsing:)`` reads.
    public var description: String { "\(packets)/\(delayMilliseconds)" }
}
