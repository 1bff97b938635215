import Synchronization
internal import CUsrsctp

/// Process-wide counts of the SCTP packets sessions hand to DTLS, by what they carry: how many
/// datagrams are standalone SACKs is the overhead of the echo pattern (docs/datachannel.md).
/// Relaxed atomics, one walk over the chunk headers per packet.
public enum SCTPPacketCounters {
    /// Counts since process start.
    public struct Snapshot: Sendable, Equatable {
        /// Every SCTP packet sent.
        public var packets: Int
        /// Packets with at least one DATA or I-DATA chunk.
        public var withData: Int
        /// Packets whose only chunks are SACKs (standalone acknowledgements).
        public var sackOnly: Int
        /// SACK-only packets usrsctp produced but a session dropped because a newer one of the
        /// same loop pass superseded it (``SCTPAcknowledgement/merge``); not in the counts above.
        public var mergedSACKs = 0
        /// usrsctp's own counts: window-update SACKs, duplicate DATA chunks received, DATA
        /// chunks retransmitted, DATA chunks dropped for lack of receive window.
        public var windowUpdateSACKs = 0, duplicateData = 0, retransmittedData = 0, windowDrops = 0
    }

    private static let packets = Atomic<Int>(0)
    private static let withData = Atomic<Int>(0)
    private static let sackOnly = Atomic<Int>(0)
    private static let merged = Atomic<Int>(0)

    /// The counts now.
    public static var snapshot: Snapshot {
        var snapshot = Snapshot(packets: packets.load(ordering: .relaxed), withData: withData.load(ordering: .relaxed),
                                sackOnly: sackOnly.load(ordering: .relaxed))
        var stat = [UInt32](repeating: 0, count: 8)
        ugate_sctp_sack_counters(&stat)
        snapshot.mergedSACKs = merged.load(ordering: .relaxed)
        snapshot.windowUpdateSACKs = Int(stat[2])
        snapshot.duplicateData = Int(stat[5])
        snapshot.retransmittedData = Int(stat[6])
        snapshot.windowDrops = Int(stat[7])
        return snapshot
    }

    /// One SACK-only packet dropped in favour of a newer one.
    static func countMerged() {
        merged.add(1, ordering: .relaxed)
    }

    /// Classifies one outgoing SCTP packet ([RFC 9260 §3](https://www.rfc-editor.org/rfc/rfc9260#section-3)):
    ///
    ///     | common header (12 bytes) | type(1) flags(1) length(2) value … pad to 4 | chunk … |
    static func count(_ packet: UnsafeRawBufferPointer) {
        packets.add(1, ordering: .relaxed)
        var offset = 12
        var data = false, onlySACK = true
        while offset + 4 <= packet.count {
            let type = packet[offset]
            let length = Int(packet[offset + 2]) << 8 | Int(packet[offset + 3])
            if type == 0 || type == 64 { data = true }  // DATA, I-DATA
            if type != 3 { onlySACK = false }  // SACK
            guard length >= 4 else { break }
            offset += (length + 3) & ~3
        }
        if data { withData.add(1, ordering: .relaxed) }
        if onlySACK, offset > 12 { sackOnly.add(1, ordering: .relaxed) }
    }
}
