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

    /// <summary>
    /// Real model shapes with random weights, for benchmarks (no download): their own vocabulary size (the byte tokenizer's
    /// ids fit inside it), architecture, tying, norm eps and rope θ as the published config.json files give them.
    /// </summary>
    private static readonly Dictionary<string, Func<int, TextTokenizer, ModelConfig>> RealShapes = new()
    {
        // HuggingFaceTB/SmolLM2-135M: llama, 576 wide, 30 layers, 9 heads / 3 kv heads, MLP 1536, vocab 49152, tied.
        ["smollm2-135m"] = (ctx, tok) => new ModelConfig
        {
            ModelType = "llama", VocabSize = 49152, HiddenSize = 576, IntermediateSize = 1536, NumLayers = 30, NumHeads = 9, NumKvHeads = 3,
            HeadDim = 64, MaxPositionEmbeddings = ctx, NormEps = 1e-5, RopeTheta = 100_000, TieWordEmbeddings = true,
            BosTokenId = tok.BosId, EosTokenIds = tok.EosId is int e ? [e] : [], PadTokenId = tok.PadId,
        },
        // Qwen/Qwen2.5-0.5B: qwen2 (q/k/v biases), 896 wide, 24 layers, 14 heads / 2 kv heads, MLP 4864, vocab 151936, tied.
        ["qwen2.5-0.5b"] = (ctx, tok) => new ModelConfig
        {
            ModelType = "qwen2", VocabSize = 151936, HiddenSize = 896, IntermediateSize = 4864, NumLayers = 24, NumHeads = 14, NumKvHeads = 2,
            HeadDim = 64, MaxPositionEmbeddings = ctx, NormEps = 1e-6, RopeTheta = 1_000_000, TieWordEmbeddings = true, AttentionBias = true,
            BosTokenId = tok.BosId, EosTokenIds = tok.EosId is int e ? [e] : [], PadTokenId = tok.PadId,
        },
    };

    public static IReadOnlyCollection<string> Names => Shapes.Keys.Concat(RealShapes.Keys).ToList();

    public static ModelConfig Create(string name, TextTokenizer tokenizer, int contextLength)
    {
        if (RealShapes.TryGetValue(name, out var real))
        {
            if (contextLength < 8) throw new FineAlignException($"context length {contextLength} is too small (at least 8).");
            var c = real(contextLength, tokenizer);
            if (tokenizer.VocabSize > c.VocabSize)
                throw new FineAlignException($"preset '{name}' has a vocabulary of {c.VocabSize}, smaller than the tokenizer's {tokenizer.VocabSize}.");
            c.Validate($"preset '{name}'");
            return c;
        }
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
