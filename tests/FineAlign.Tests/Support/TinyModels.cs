using FineAlign.Models;

namespace FineAlign.Tests.Support;

/// <summary>Model configurations the tests build many times.</summary>
internal static class TinyModels
{
    /// <summary>A one-layer Llama over the byte tokenizer's 261 ids (BOS 256, EOS 257, PAD 258), context 64: the online-RL tests' policy.</summary>
    public static ModelConfig ByteLlama() => new()
    {
        ModelType = "llama", VocabSize = 261, HiddenSize = 16, IntermediateSize = 32, NumLayers = 1, NumHeads = 2,
        NumKvHeads = 2, HeadDim = 8, MaxPositionEmbeddings = 64, BosTokenId = 256, EosTokenIds = [257], PadTokenId = 258,
    };
}
