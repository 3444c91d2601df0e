using FineAlign.Models;
using FineAlign.Objectives;
using FineAlign.Training;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace FineAlign.Tests.Training;

/// <summary>
/// Test-only causal LM (~600 parameters): embedding → LayerNorm → tanh → dropout → linear head,
/// plus the previous token's embedding so it can learn a bigram pattern. Weights come from its
/// own seeded generator, so construction never touches the global torch RNG.
/// </summary>
internal sealed class TinyLm : CausalLM
{
    private readonly Embedding embed;
    private readonly LayerNorm norm;
    private readonly Dropout drop;
    private readonly Linear lm_head;

    public TinyLm(int vocab = 11, int hidden = 16, double dropout = 0.0, int initSeed = 0)
        : base("tiny", new ModelConfig { VocabSize = vocab, HiddenSize = hidden, NumLayers = 1, NumHeads = 1, NumKvHeads = 1, HeadDim = hidden, IntermediateSize = hidden, MaxPositionEmbeddings = 64 })
    {
        embed = nn.Embedding(vocab, hidden);
        norm = nn.LayerNorm(hidden);
        drop = nn.Dropout(dropout);
        lm_head = nn.Linear(hidden, vocab);
        RegisterComponents();
        using var g = new torch.Generator((ulong)initSeed);
        using var noGrad = torch.no_grad();
        foreach (var (_, p) in named_parameters())
            p.copy_(torch.randn(p.shape, generator: g) * 0.3);
    }

    public override Tensor ForwardHidden(Tensor inputIds, Tensor? attentionMask = null, KvCache? cache = null)
    {
        var e = embed.call(inputIds);
        var prev = torch.nn.functional.pad(e[.., ..^1, ..], new long[] { 0, 0, 1, 0 });
        return drop.call(norm.call(e + 0.5 * prev).tanh());
    }

    public override Tensor LmHead(Tensor hidden) => lm_head.call(hidden);
}

internal sealed record TestBatch(Tensor InputIds, Tensor AttentionMask, Tensor LossMask);

/// <summary>Learnable synthetic data: sequences counting up by a per-example stride, mod vocab.</summary>
internal static class TinyData
{
    public static int[][] Examples(int count, int length = 8, int vocab = 11)
        => Enumerable.Range(0, count)
            .Select(i => Enumerable.Range(0, length).Select(t => (i * 3 + t * (1 + i % 2)) % vocab).ToArray())
            .ToArray();

    public static BatchSource<TestBatch> Source(int[][] examples)
        => new(examples.Length, idx =>
        {
            var rows = idx.Select(i => examples[i]).ToArray();
            int b = rows.Length, t = rows[0].Length;
            var ids = torch.tensor(rows.SelectMany(r => r.Select(x => (long)x)).ToArray(), new long[] { b, t });
            var attn = torch.ones(new long[] { b, t }, dtype: ScalarType.Int64);
            var loss = torch.ones(new long[] { b, t }, dtype: ScalarType.Bool);
            return new TestBatch(ids, attn, loss);
        });

    public static Func<TestBatch, LossResult> Step(TinyLm model)
    {
        var step = new CausalLmStep(model);
        return b => step.Compute(b.InputIds, b.AttentionMask, b.LossMask);
    }
}

/// <summary>Tests that draw from the global torch RNG (dropout) or compare runs bit for bit run alone.</summary>
[CollectionDefinition("Serial torch RNG", DisableParallelization = true)]
public sealed class SerialTorchRng { }
