/// What a release ships: a model (into model slots) or the agent itself (into the agent's own
/// slots under its state directory). Signed into the catalog by the release key and into each
/// assignment by the director key, so it cannot be changed on the way.
public enum ReleaseKind: String, Codable, Sendable, CaseIterable {
    case model
    case agent

    /// The one model name agent releases go under: a model release never uses it, an agent
    /// release never another, so an agent binary can never land in a model slot or the reverse.
    public static let agentModel = "fleet-agent"
    /// What an agent that installs agent releases says in its facts' `capabilities`; the
    /// controller assigns agent releases to no other device.
    public static let selfUpdateCapability = "self-update"
    /// The `format` of an agent binary in a catalog.
    public static let agentFormat = "elf"

    /// Whether a catalog of this kind may name `model`.
    public func allows(model: String) -> Bool { (self == .agent) == (model == Self.agentModel) }
}
