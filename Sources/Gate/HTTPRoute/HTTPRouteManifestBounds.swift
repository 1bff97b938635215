internal import CYaml

/// The bounds a manifest's YAML is held to before Yams builds it. Yams composes and
/// constructs a document recursively and expands every alias in place, so a short text can
/// exhaust the stack (collections nested thousands deep: a crash) or time and memory (anchors
/// aliased within anchors, "billion laughs": 30 lines that expand to 10⁹ nodes); and its
/// constructor force-unwraps every mapping key as a string, so a key that is a sequence or a
/// mapping (`{{}}`, found by fuzzing) crashes it. One pass over libyaml's events — its
/// parser keeps explicit stacks, no recursion — measures depth and size, counting each alias
/// as the size of the node it stands for, and refuses keys that are not scalars. Gateway API
/// manifests nest about ten deep, have hundreds of nodes and only string keys.
enum ManifestBounds {
    /// Deepest nesting of sequences and mappings accepted.
    static let maxDepth = 64
    /// Most nodes one document may have with its aliases expanded.
    static let maxNodes = 100_000

    /// What exceeds a bound in `yaml` (the document's number and the problem), nil when
    /// nothing does — or when libyaml finds a syntax error, which Yams then reports.
    static func problem(_ yaml: String) -> (document: Int, message: String)? {
        var parser = yaml_parser_t()
        guard yaml_parser_initialize(&parser) == 1 else { return nil }
        defer { yaml_parser_delete(&parser) }
        let bytes = Array(yaml.utf8)
        return bytes.withUnsafeBufferPointer { buffer -> (document: Int, message: String)? in
            yaml_parser_set_input_string(&parser, buffer.baseAddress, buffer.count)
            var document = 0
            // Per open collection: the nodes in it so far, its anchor, whether it is a mapping
            // whose next node is a key.
            var open: [(nodes: Int, anchor: String?, keyNext: Bool?)] = []
            // Anchor → the nodes of the node it names, and whether it is a collection (anchors
            // are per document).
            var anchors: [String: (nodes: Int, collection: Bool)] = [:]
            let badKey = "YAML mapping key that is a sequence or a mapping (keys are strings)"
            var event = yaml_event_t()
            while yaml_parser_parse(&parser, &event) == 1 {
                defer { yaml_event_delete(&event) }
                let nodes: Int
                switch event.type {
                case YAML_STREAM_END_EVENT:
                    return nil
                case YAML_DOCUMENT_START_EVENT:
                    document += 1
                    anchors = [:]
                    continue
                case YAML_SEQUENCE_START_EVENT, YAML_MAPPING_START_EVENT:
                    if open.last?.keyNext == true { return (document, badKey) }
                    let mapping = event.type == YAML_MAPPING_START_EVENT
                    let anchor = mapping ? event.data.mapping_start.anchor : event.data.sequence_start.anchor
                    open.append((1, anchor.map { String(cString: $0) }, mapping ? true : nil))
                    if open.count > maxDepth { return (document, "YAML nested deeper than \(maxDepth) levels") }
                    continue
                case YAML_SEQUENCE_END_EVENT, YAML_MAPPING_END_EVENT:
                    guard let closed = open.popLast() else { return nil }
                    if let anchor = closed.anchor { anchors[anchor] = (closed.nodes, true) }
                    nodes = closed.nodes
                case YAML_SCALAR_EVENT:
                    if let anchor = event.data.scalar.anchor { anchors[String(cString: anchor)] = (1, false) }
                    nodes = 1
                case YAML_ALIAS_EVENT:
                    // An undefined alias is Yams's error to report.
                    let named = event.data.alias.anchor.flatMap { anchors[String(cString: $0)] }
                    if open.last?.keyNext == true, named?.collection == true { return (document, badKey) }
                    nodes = named?.nodes ?? 1
                default:
                    continue
                }
                guard !open.isEmpty else { continue }
                open[open.count - 1].keyNext = open[open.count - 1].keyNext.map { !$0 }
                open[open.count - 1].nodes += nodes
                if open[open.count - 1].nodes > maxNodes {
                    return (document, "YAML document of more than \(maxNodes) nodes with its aliases expanded")
                }
            }
            return nil
        }
    }
}
