using FineAlign.Objectives;
using static FineAlign.Tests.Objectives.T;
using static TorchSharp.torch;

namespace FineAlign.Tests.Objectives;

public class UdmTests
{
    // Separable: desirable prompts sit around +2 on axis 0, undesirable ones are their mirror image
    // (−x), so the balanced problem is symmetric and the decision boundary passes through the origin.
    private static (Tensor Up, Tensor Down) Mirrored(int n, long seed)
    {
        var gen = new Generator((ulong)seed);
        var up = randn(n, 3, generator: gen) * 0.5f;
        up[.., 0] += 2;
        return (up, up.neg());
    }

    [Fact]
    public void SeparableDataGivesClampedRatiosAndNeutralBoundary()
    {
        var (up, down) = Mirrored(64, 1);
        var udm = Udm.Fit(up, down);
        Assert.True(udm.Iterations < 100);
        var p = Values(udm.Probabilities(cat(new[] { up, down }, 0)));
        Assert.All(p[..64], x => Assert.True(x > 0.95f, $"p(desirable) = {x} on a desirable prompt"));
        Assert.All(p[64..], x => Assert.True(x < 0.05f, $"p(desirable) = {x} on an undesirable prompt"));

        // Thumbs-down weights: desirable-looking prompt ⇒ ratio ≫ 10 ⇒ 10; undesirable-looking ⇒ ≈ 0 ⇒ 0.5;
        // at the origin p = 0.5 by symmetry ⇒ 0.5/(0.5 + 1e-8) ≈ 1. Thumbs-up ⇒ 1 whatever the prompt.
        var queries = tensor(new float[] { 3, 0, 0, -3, 0, 0, 0, 0, 0, 3, 0, 0 }, new long[] { 4, 3 });
        var w = Values(udm.Weights(queries, B(false, false, false, true)));
        Assert.Equal(Udm.MaxWeight, w[0], 5);
        Assert.Equal(Udm.MinWeight, w[1], 5);
        Assert.Equal(1.0, w[2], 3);
        Assert.Equal(1.0, w[3], 6);
    }

    [Fact]
    public void WeightsGrowWithTheDesirableDirection()
    {
        var (up, down) = Mirrored(64, 2);
        var udm = Udm.Fit(up, down);
        var xs = linspace(-3, 3, 25);
        var q = zeros(25, 3);
        q[.., 0] = xs;
        var w = Values(udm.Weights(q, zeros(25, dtype: ScalarType.Bool)));
        for (int i = 1; i < w.Length; i++) Assert.True(w[i] >= w[i - 1], $"weight fell from {w[i - 1]} to {w[i]}");
        Assert.All(w, x => Assert.InRange(x, Udm.MinWeight, Udm.MaxWeight));
    }

    [Fact]
    public void OverlappingGaussiansRecoverTheDensityRatio()
    {
        // up ~ N(+0.5, 1), down ~ N(−0.5, 1) in 1-D: the true ratio p_up(x)/p_down(x) = e^x.
        // At x = 1 the weight should be near e ≈ 2.72; at x = −1 the ratio e^−1 ≈ 0.37 is clamped to 0.5.
        var gen = new Generator(3);
        var up = randn(1024, 1, generator: gen) + 0.5f;
        var down = randn(1024, 1, generator: gen) - 0.5f;
        var udm = Udm.Fit(up, down);
        var w = Values(udm.Weights(tensor(new float[] { 1, -1 }, new long[] { 2, 1 }), B(false, false)));
        Assert.InRange(w[0], 2.2f, 3.3f);
        Assert.Equal(Udm.MinWeight, w[1], 5);
    }

    [Fact]
    public void SubsamplesEachSideDeterministically()
    {
        var (up, down) = Mirrored(300, 4);
        var a = Udm.Fit(up, down[..50], maxPerSide: 40, seed: 9);
        var b = Udm.Fit(up, down[..50], maxPerSide: 40, seed: 9);
        var c = Udm.Fit(up, down[..50], maxPerSide: 40, seed: 10);
        Assert.Equal(a.Coefficients, b.Coefficients);
        Assert.NotEqual(a.Coefficients, c.Coefficients);
    }

    [Fact]
    public void RejectsBadShapes()
    {
        var (up, down) = Mirrored(8, 5);
        Assert.Throws<FineAlignException>(() => Udm.Fit(up, down[.., ..2]));
        Assert.Throws<FineAlignException>(() => Udm.Fit(up, zeros(0, 3)));
        var udm = Udm.Fit(up, down);
        Assert.Throws<FineAlignException>(() => udm.Weights(zeros(2, 4), B(false, false)));
        Assert.Throws<FineAlignException>(() => udm.Weights(zeros(2, 3), B(false)));
    }
}
