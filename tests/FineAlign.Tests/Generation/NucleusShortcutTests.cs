using FineAlign.Generation;
using TorchSharp;
using static TorchSharp.torch;

namespace FineAlign.Tests.Generation;

/// <summary>The top-k shortcut of nucleus sampling must choose exactly the tokens of the full sort (issue #18).</summary>
public class NucleusShortcutTests
{
    private const int Vocab = 2000, Rows = 32;

    // Peaked rows (scale 10) have a small nucleus, so 64 candidates cover p = 0.9; flat rows (scale 0.1) do not.
    private static Tensor Logits(long seed, double scale)
    {
        using var g = new torch.Generator((ulong)seed);
        return torch.randn(new long[] { Rows, Vocab }, generator: g) * scale;
    }

    private static long[] Draw(Tensor logits, double topP, long seed, int candidates, out bool shortcut)
    {
        using var scope = torch.NewDisposeScope();
        using var g = new torch.Generator((ulong)seed);
        return TextGenerator.SampleNucleus(logits, topP, g, candidates, out shortcut).data<long>().ToArray();
    }

    [Theory]
    [InlineData(10.0, true)]   // shortcut taken
    [InlineData(0.1, false)]   // flat: the candidates miss p, falls back to the full sort
    public void ShortcutAndFullSortChooseIdenticalTokens(double scale, bool expectShortcut)
    {
        using var scope = torch.NewDisposeScope();
        for (int seed = 0; seed < 25; seed++)
        {
            var logits = Logits(seed, scale);
            var full = Draw(logits, 0.9, 100 + seed, candidates: 0, out bool fullShortcut);
            var fast = Draw(logits, 0.9, 100 + seed, candidates: 64, out bool shortcut);
            Assert.False(fullShortcut);
            Assert.Equal(expectShortcut, shortcut);
            Assert.Equal(full, fast);
        }
    }

    [Fact]
    public void ASecondTierCoversAMidSizedNucleusWithTheSameTokens()
    {
        // 32k vocabulary, logit std 4: the top-p 0.9 nucleus is a few hundred tokens, more than 64 candidates hold and
        // far fewer than 64 × 16 = 1024 (the second tier); the draw must equal the full sort's.
        using var scope = torch.NewDisposeScope();
        for (int seed = 0; seed < 5; seed++)
        {
            using var g = new torch.Generator((ulong)(50 + seed));
            var logits = torch.randn(new long[] { 8, 32000 }, generator: g) * 4.0;
            var probs = logits.softmax(-1);
            var first = probs.topk(64, -1).values.sum(-1);
            Assert.True(first.lt(0.9).any().item<bool>(), "the first tier alone would not cover this case");
            var fast = Draw(logits, 0.9, 300 + seed, candidates: 64, out bool shortcut);
            Assert.True(shortcut, "the second tier should cover it");
            Assert.Equal(Draw(logits, 0.9, 300 + seed, candidates: 0, out _), fast);
        }
    }

    [Fact]
    public void ShortcutMatchesThePreviousSortFirstImplementation()
    {
        // Reference: today's formula before the shortcut (sort the logits, then softmax in sorted order).
        using var scope = torch.NewDisposeScope();
        int taken = 0;
        for (int seed = 0; seed < 25; seed++)
        {
            var logits = Logits(seed, 3.0);
            var fast = Draw(logits, 0.8, 7 + seed, candidates: 256, out bool shortcut);
            if (shortcut) taken++;
            using var g = new torch.Generator((ulong)(7 + seed));
            var (sorted, order) = logits.sort(-1, descending: true);
            var probs = sorted.softmax(-1);
            var kept = probs.masked_fill((probs.cumsum(-1) - probs).gt(0.8), 0.0).to_type(ScalarType.Float64);
            var cdf = kept.cumsum(-1);
            var total = cdf[TensorIndex.Colon, TensorIndex.Slice(-1, null)];
            var u = torch.minimum(torch.rand(new long[] { Rows, 1 }, ScalarType.Float64, generator: g) * total, total.nextafter(torch.zeros_like(total)));
            var reference = order.gather(-1, torch.searchsorted(cdf, u, right: true)).squeeze(-1).data<long>().ToArray();
            Assert.Equal(reference, fast);
        }
        Assert.True(taken > 0, "the shortcut was never taken");
    }

    [Fact]
    public void TopKWithTopPNeverLeavesTheTopK()
    {
        // With top-k = 5 the k + 1-th candidate has probability 0: the shortcut always applies, even at p near 1.
        using var scope = torch.NewDisposeScope();
        var logits = Logits(3, 0.1);
        var o = new GenerationOptions { TopK = 5, TopP = 0.99, Seed = 1 };
        var top5 = logits.topk(5, -1).indexes;
        using var g = new torch.Generator(1);
        for (int draw = 0; draw < 20; draw++)
        {
            var (next, _) = TextGenerator.ChooseNext(logits, o, g);
            Assert.True(top5.eq(next.unsqueeze(-1)).any(-1).all().item<bool>());
        }
        var filtered = logits.masked_fill(logits.lt(logits.topk(5, -1).values[TensorIndex.Colon, TensorIndex.Slice(-1, null)]), double.NegativeInfinity);
        var fast = Draw(filtered, 0.99, 9, TextGenerator.NucleusCandidates(o, Vocab), out bool shortcut);
        Assert.True(shortcut);
        Assert.Equal(Draw(filtered, 0.99, 9, 0, out _), fast);
    }
}
