namespace FineAlign;

/// <summary>
/// One progress report from long library work (training, generation, corpus writing). The library only calls
/// <see cref="IProgress{T}.Report"/>; the CLI renders it (bars on a terminal, log lines in CI), so the library never
/// touches the console. <paramref name="Total"/> 0 means unknown. <paramref name="Loss"/> is optional; other
/// numbers go in <paramref name="Metrics"/> (name → value, e.g. "kl", "reward").
/// </summary>
public readonly record struct ProgressUpdate(string Stage, long Step, long Total, double? Loss = null,
    IReadOnlyDictionary<string, double>? Metrics = null);
