using FineAlign.Text;

namespace FineAlign.Models;

/// <summary>
/// Llama-architecture shapes for models trained from scratch (no downloaded weights). The vocabulary
/// and special ids come from the tokenizer, so the saved folder is a normal HF Llama checkpoint.
/// </summary>
public static class ModelPresets
{
    /// <summary>name → (hidden, layers, heads, kv heads, intermediate).</summary>
    private static readonly Dictionary<string, (int Hidden, int Layers, int Heads, int KvHeads, int Intermediate)> Shapes = new()
    {
        // ~40k parameters with a byte vocabulary: unit tests and smoke runs.
        ["tiny"] = (32, 2, 4, 2, 64),
        // ~1.9M parameters: learns the built-in corpus in a few minutes on 2 CPU cores (the default).
        ["small"] = (192, 4, 6, 6, 512),
        // ~10M parameters: better fluency when there is time (tens of minutes on CPU).
        ["base"] = (384, 6, 6, 6, 1024),
        // The TinyStories stories15M shape (without its 32k vocabulary): for benchmarks.
        ["stories15m"] = (288, 6, 6, 6, 768),
    };

    public static IReadOnlyCollection<string> Names => Shapes.Keys;

    public static ModelConfig Create(string name, TextTokenizer tokenizer, int contextLength)
    {
        if (!Shapes.TryGetValue(name, out var s))
            throw new FineAlignException($"unknown model preset '{name}' (known: {string.Join(", ", Shapes.Keys)}).");
        if (contextLength < 8) throw new FineAlignException($"context length {contextLength} is too small (at least 8).");
        var config = new ModelConfig
        {
            ModelType = "llama",
            VocabSize = tokenizer.VocabSize,
            HiddenSize = s.Hidden,
            IntermediateSize = s.Intermediate,
            NumLayers = s.Layers,
            NumHeads = s.Heads,
            NumKvHeads = s.KvHeads,
            HeadDim = s.Hidden / s.Heads,
            MaxPositionEmbeddings = contextLength,
            NormEps = 1e-5,
            RopeTheta = 10_000,
            TieWordEmbeddings = true,
            BosTokenId = tokenizer.BosId,
            EosTokenIds = tokenizer.EosId is int e ? new[] { e } : Array.Empty<int>(),
            PadTokenId = tokenizer.PadId,
        };
        config.Validate($"preset '{name}'");
        return config;
    }
}
