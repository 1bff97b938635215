/// A minimal first-in first-out queue (amortised O(1), releases popped elements at once).
struct FIFO<Element> {
    private var storage: [Element?] = []
    private var head = 0

    var isEmpty: Bool { head == storage.count }
    var count: Int { storage.count - head }
    var first: Element? { isEmpty ? nil : storage[head] }

    mutating func append(_ element: Element) { storage.append(element) }

    mutating func popFirst() -> Element? {
        guard !isEmpty else { return nil }
        let element = storage[head]
        storage[head] = nil
        head += 1
        if head == storage.count {
            storage.removeAll(keepingCapacity: true)
            head = 0
        } else if head >= 1024, head * 2 >= storage.count {
            storage.removeFirst(head)
            head = 0
        }
        return element
    }

    /// Mutates the first element in place; the queue must not be empty.
    mutating func updateFirst(_ body: (inout Element) -> Void) {
        body(&storage[head]!)
    }

    /// Removes and returns every element.
    mutating func removeAll() -> [Element] {
        let all = storage[head...].compactMap { $0 }
        storage.removeAll()
        head = 0
        return all
    }

    /// Removes the elements matching `predicate`, keeping the order of the rest.
    mutating func removeAll(where predicate: (Element) -> Bool) {
        storage = storage[head...].filter { $0.map { !predicate($0) } ?? false }
        head = 0
    }
}
