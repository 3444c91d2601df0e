using FineAlign.Objectives;
using TorchSharp;
using static TorchSharp.torch;
using static FineAlign.Tests.Rl.RlTensors;

namespace FineAlign.Tests.Rl;

public class AlolTests
{
    // Row 0: π_θ tokens [½, ½], π_ref [¼, ½] → sequence ratio 2 → clipped to 1.9 (ε = 0.9).
    // Row 1: π_θ [0.05, pad], π_ref [0.025, pad] → ratio 2 → 1.9. A = [2, −1] → A⁺ = [2, 0]; R = [3, 1].
    private static readonly Tensor Mask2 = Mask(new[] { 1, 1 }, new[] { 1, 0 });
    private static Tensor Logp() => F(new[] { Ln(0.5), Ln(0.5), Ln(0.05), 123f }, 2, 2);
    private static Tensor RefLogp() => F(new[] { Ln(0.25), Ln(0.5), Ln(0.025), -77f }, 2, 2);
    private static readonly Tensor R = F(new[] { 3f, 1 }, 2);
    private static readonly Tensor A = F(new[] { 2f, -1 }, 2);
    private static readonly double Nll0 = -Math.Log(0.25), Nll1 = -Math.Log(0.05);

    private static float Loss(AlolVariant v) => Alol.Loss(v, Logp(), RefLogp(), Mask2, R, A).item<float>();

    [Fact]
    public void AdvantageAndWeights()
    {
        Near(new[] { 2.0, -1 }, Alol.Advantages(F(new[] { 3f, 1 }, 2), F(new[] { 1f, 2 }, 2)));
        Near(new[] { 2.0, 0 }, Alol.PositiveAdvantages(A));
        Near(new[] { 1.9, 0.5, 0.1 }, Alol.SequenceWeight(F(new[] { Ln(2), Ln(0.5), Ln(0.01) }, 3), zeros(3)));
        Near(new[] { 1.9, 1, 1.9, 0 }, Alol.TokenWeights(Logp(), RefLogp(), Mask2));
        Near(new[] { 1.5, 1, 1.5, 0 }, Alol.TokenWeights(Logp(), RefLogp(), Mask2, epsilon: 0.5));
    }

    [Fact]
    public void EachVariantMatchesItsFormula()
    {
        Assert.Equal((Nll0 * 1.9 * 2 + 0) / 2, Loss(AlolVariant.Alol), 4);
        Assert.Equal((2 * (1.9 * Math.Log(2) + 1 * Math.Log(2)) + 0) / 2, Loss(AlolVariant.AlolSeq), 4);
        Assert.Equal(Nll0 * 2 / 2, Loss(AlolVariant.AlolRefFree), 4);
        Assert.Equal(Nll0 + 0.1 * (Math.Log(2) + Math.Log(2)) / 2, Loss(AlolVariant.AlolKl), 4);
        Assert.Equal((Nll0 * 1.9 * 3 + Nll1 * 1.9 * 1) / 2, Loss(AlolVariant.RLol), 4);
        Assert.Equal((Nll0 * 3 + Nll1 * 1) / 2, Loss(AlolVariant.WeightedBc), 4);
        // R-GOLD: row 0 weights max(½, 0.1) = ½ on two tokens of −ln ½; row 1 max(0.05, 0.1) = 0.1 on −ln 0.05.
        Assert.Equal((3 * (0.5 * Math.Log(2) * 2) + 1 * (0.1 * Nll1)) / 2, Loss(AlolVariant.RGold), 4);
    }

    [Fact]
    public void ImportanceWeightIsDetached()
    {
        // d/dlogp of mean(−Σ logp · w · A⁺) = −w·A⁺/B per valid token: −1.9·2/2 on row 0, 0 on row 1 (A⁺ = 0) and padding.
        var logp = Logp().requires_grad_();
        Alol.Loss(AlolVariant.Alol, logp, RefLogp(), Mask2, R, A).backward();
        Near(new[] { -1.9, -1.9, 0, 0 }, logp.grad!);
    }

    [Fact]
    public void MissingInputsAreNamed()
    {
        var e = Assert.Throws<FineAlignException>(() => Alol.Loss(AlolVariant.WeightedBc, Logp(), RefLogp(), Mask2, null, A));
        Assert.Contains("rewards", e.Message);
    }

    [Fact]
    public void PrioritySamplingNeverDrawsNonPositiveAdvantages()
    {
        var adv = new[] { 0.5, -1, 0, 1.5 };
        Assert.Equal(new[] { 0.25, 0, 0, 0.75 }, Alol.PriorityProbabilities(adv));
        Assert.Equal(0.5, Alol.PositiveFraction(adv));
        var draws = new PrioritySampler(adv, seed: 7).Draw(4000);
        Assert.DoesNotContain(1, draws);
        Assert.DoesNotContain(2, draws);
        Assert.InRange(draws.Count(i => i == 3) / 4000.0, 0.72, 0.78);
        Assert.Equal(draws, new PrioritySampler(adv, seed: 7).Draw(4000)); // seeded: repeatable
        Assert.NotEqual(draws, new PrioritySampler(adv, seed: 8).Draw(4000));
        Assert.Throws<FineAlignException>(() => Alol.PriorityProbabilities(new[] { -1.0, 0 }));
    }
}
