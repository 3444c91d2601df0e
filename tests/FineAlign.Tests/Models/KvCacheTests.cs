using FineAlign.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace FineAlign.Tests.Models;

/// <summary>
/// Incremental decoding and padding must not change what the model computes on real tokens.
/// </summary>
public class KvCacheTests
{
    public static IEnumerable<object[]> Archs() => new[] { new object[] { "llama-gqa" }, new object[] { "qwen2-bias" }, new object[] { "mistral-window3" }, new object[] { "gpt2" } };

    private static void AssertClose(Tensor expected, Tensor actual, double tol, string what)
    {
        Assert.Equal(expected.shape, actual.shape);
        Assert.False(actual.isnan().any().item<bool>(), what + ": NaN");
        double diff = (expected - actual).abs().max().item<float>();
        Assert.True(diff <= tol, $"{what}: max |diff| = {diff} > {tol}");
    }

    [Theory]
    [MemberData(nameof(Archs))]
    public void ChunkedDecodingThroughCacheEqualsOneFullForward(string arch)
    {
        using var model = ModelFactory.Create(ModelTests.ByName(arch), 13);
        using var _ = inference_mode();
        var g = new torch.Generator(3);
        using var ids = randint(3, 50, new long[] { 2, 10 }, generator: g);
        using var full = model.Forward(ids);

        using var cache = model.NewCache(16);
        var parts = new List<Tensor>();
        int start = 0;
        foreach (int n in new[] { 4, 1, 1, 4 })
        {
            parts.Add(model.Forward(ids.narrow(1, start, n), null, cache));
            start += n;
            Assert.Equal(start, cache.Length);
        }
        using var chunked = cat(parts, 1);
        AssertClose(full, chunked, 1e-5, arch);
        foreach (var p in parts) p.Dispose();
    }

    [Theory]
    [MemberData(nameof(Archs))]
    public void LeftPaddedBatchMatchesEachSequenceAloneWithAndWithoutCache(string arch)
    {
        using var model = ModelFactory.Create(ModelTests.ByName(arch), 17);
        using var _ = inference_mode();
        var g = new torch.Generator(5);
        using var a = randint(3, 50, new long[] { 1, 8 }, generator: g);
        using var b = randint(3, 50, new long[] { 1, 5 }, generator: g);
        using var pad = zeros(new long[] { 1, 3 }, ScalarType.Int64);
        using var batch = cat(new[] { a, cat(new[] { pad, b }, 1) }, 0);                       // [2, 8]
        using var mask = tensor(new long[] { 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 1, 1, 1, 1, 1 }).view(2, 8);

        using var aloneA = model.Forward(a);
        using var aloneB = model.Forward(b);

        // One padded forward pass: real tokens see the same logits; pad rows stay finite.
        using var batched = model.Forward(batch, mask);
        AssertClose(aloneA, batched.narrow(0, 0, 1), 1e-5, arch + " row A");
        AssertClose(aloneB, batched.narrow(0, 1, 1).narrow(1, 3, 5), 1e-5, arch + " row B");
        Assert.True(batched.isfinite().all().item<bool>());

        // Prefill 6 columns, then decode the last two one at a time with the growing mask.
        using var cache = model.NewCache(8);
        using var pre = model.Forward(batch.narrow(1, 0, 6), mask.narrow(1, 0, 6), cache);
        using var s7 = model.Forward(batch.narrow(1, 6, 1), mask.narrow(1, 0, 7), cache);
        using var s8 = model.Forward(batch.narrow(1, 7, 1), mask.narrow(1, 0, 8), cache);
        using var stepped = cat(new[] { pre, s7, s8 }, 1);
        AssertClose(aloneA, stepped.narrow(0, 0, 1), 1e-5, arch + " cached row A");
        AssertClose(aloneB, stepped.narrow(0, 1, 1).narrow(1, 3, 5), 1e-5, arch + " cached row B");
    }

    [Theory]
    [MemberData(nameof(Archs))]
    public void RightPaddedBatchMatchesEachSequenceAlone(string arch)
    {
        using var model = ModelFactory.Create(ModelTests.ByName(arch), 19);
        using var _ = inference_mode();
        var g = new torch.Generator(6);
        using var a = randint(3, 50, new long[] { 1, 7 }, generator: g);
        using var b = randint(3, 50, new long[] { 1, 4 }, generator: g);
        using var batch = cat(new[] { a, cat(new[] { b, zeros(new long[] { 1, 3 }, ScalarType.Int64) }, 1) }, 0);
        using var mask = tensor(new long[] { 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0 }).view(2, 7);
        using var batched = model.Forward(batch, mask);
        using var aloneA = model.Forward(a);
        using var aloneB = model.Forward(b);
        AssertClose(aloneA, batched.narrow(0, 0, 1), 1e-5, arch + " row A");
        AssertClose(aloneB, batched.narrow(0, 1, 1).narrow(1, 0, 4), 1e-5, arch + " row B");
    }

    [Fact]
    public void PlanUsesTheCausalKernelUnlessPaddingOrCacheNeedAMask()
    {
        using var ids = ones(new long[] { 2, 4 }, ScalarType.Int64);
        using var right = tensor(new long[] { 1, 1, 1, 1, 1, 1, 0, 0 }).view(2, 4);
        using var left = tensor(new long[] { 1, 1, 1, 1, 0, 0, 1, 1 }).view(2, 4);
        Assert.True(AttentionPlan.Create(ids, null, null, ScalarType.Float32).IsCausal);
        Assert.True(AttentionPlan.Create(ids, right, null, ScalarType.Float32).IsCausal);
        var leftPlan = AttentionPlan.Create(ids, left, null, ScalarType.Float32);
        Assert.False(leftPlan.IsCausal);
        Assert.Equal(new long[] { 2, 1, 4, 4 }, leftPlan.Mask!.shape);
        // Row 1, query 0 is padding with no visible key: finite (not -inf) everywhere.
        Assert.True(leftPlan.Mask.isfinite().all().item<bool>());
        Assert.Equal(new long[] { 0, 0, 0, 1 }, leftPlan.Positions[1].data<long>().ToArray());
        // A window smaller than the sequence forces an explicit mask.
        Assert.False(AttentionPlan.Create(ids, null, null, ScalarType.Float32, slidingWindow: 2).IsCausal);
        Assert.True(AttentionPlan.Create(ids, null, null, ScalarType.Float32, slidingWindow: 4).IsCausal);
    }

    [Fact]
    public void PaddingActuallyMattersWithoutTheMask()
    {
        // Guard for the test above: without the mask the padded row differs, so the mask is doing the work.
        using var model = ModelFactory.Create(ModelTests.ByName("llama-gqa"), 17);
        using var _ = inference_mode();
        using var b = tensor(new long[] { 7, 8, 9, 10 }).view(1, 4);
        using var padded = tensor(new long[] { 0, 0, 7, 8, 9, 10 }).view(1, 6);
        using var alone = model.Forward(b);
        using var unmasked = model.Forward(padded);
        Assert.True((alone - unmasked.narrow(1, 2, 4)).abs().max().item<float>() > 1e-3);
    }

    [Fact]
    public void MaskWithWrongWidthIsRejected()
    {
        using var model = ModelFactory.Create(ModelTests.ByName("gpt2"), 1);
        using var ids = ones(new long[] { 1, 4 }, ScalarType.Int64);
        using var mask = ones(new long[] { 1, 3 }, ScalarType.Int64);
        Assert.Throws<ArgumentException>(() => model.Forward(ids, mask).Dispose());
    }
}
