using FineAlign.Objectives;
using TorchSharp;
using static TorchSharp.torch;
using static FineAlign.Tests.Rl.RlTensors;

namespace FineAlign.Tests.Rl;

public class PpoTests
{
    [Fact]
    public void GaeMatchesHandWorkedThreeTokenExample()
    {
        // γ = 1, λ = 0.95, r = [0, 0, 1], V = [0.5, 0.4, 0.8], V after the last token = 0.
        // t=2: δ = 1 + 0 − 0.8 = 0.2;   A = 0.2;                    R = 0.2 + 0.8 = 1.0
        // t=1: δ = 0 + 0.8 − 0.4 = 0.4; A = 0.4 + 0.95·0.2 = 0.59;  R = 0.59 + 0.4 = 0.99
        // t=0: δ = 0 + 0.4 − 0.5 = −0.1; A = −0.1 + 0.95·0.59 = 0.4605; R = 0.9605
        var (adv, ret) = Ppo.Gae(F(new[] { 0f, 0, 1 }, 1, 3), F(new[] { 0.5f, 0.4f, 0.8f }, 1, 3), Mask(new[] { 1, 1, 1 }), 1.0, 0.95);
        Near(new[] { 0.4605, 0.59, 0.2 }, adv);
        Near(new[] { 0.9605, 0.99, 1.0 }, ret);
    }

    [Fact]
    public void GaePaddingGivesZerosAndNeverLeaks()
    {
        // Row 0: the same 3 tokens + 2 right-padding slots holding garbage; row 1: left padding then the same tokens.
        var rewards = F(new[] { 0f, 0, 1, 100, -50, 7, 0, 0, 1, 0 }, 2, 5);
        var values = F(new[] { 0.5f, 0.4f, 0.8f, 30, 40, -9, 0.5f, 0.4f, 0.8f, 0 }, 2, 5);
        var mask = Mask(new[] { 1, 1, 1, 0, 0 }, new[] { 0, 1, 1, 1, 0 });
        var (adv, ret) = Ppo.Gae(rewards, values, mask, 1.0, 0.95);
        Near(new[] { 0.4605, 0.59, 0.2, 0, 0, 0, 0.4605, 0.59, 0.2, 0 }, adv);
        Near(new[] { 0.9605, 0.99, 1.0, 0, 0, 0, 0.9605, 0.99, 1.0, 0 }, ret);
    }

    [Fact]
    public void GaeWithGammaAndLambdaBelowOne()
    {
        // γ = 0.5, λ = 0.5, r = [1, 1], V = [0, 0]: A1 = 1; A0 = 1 + 0.25·1 = 1.25.
        var (adv, _) = Ppo.Gae(F(new[] { 1f, 1 }, 1, 2), zeros(1, 2), Mask(new[] { 1, 1 }), 0.5, 0.5);
        Near(new[] { 1.25, 1.0 }, adv);
    }

    [Fact]
    public void WhiteningUsesOnlyValidTokens()
    {
        var x = F(new[] { 1f, 2, 3, 100 }, 1, 4);
        var m = Mask(new[] { 1, 1, 1, 0 });
        Assert.Equal(2f, Masked.Mean(x, m).item<float>(), 5);
        Assert.Equal(1f, Masked.Var(x, m).item<float>(), 5);                 // (1 + 0 + 1) / (3 − 1)
        Assert.Equal(2f / 3f, Masked.Var(x, m, unbiased: false).item<float>(), 5);
        Near(new[] { -1.0, 0, 1, 0 }, Masked.Whiten(x, m), 4);
        Near(new[] { 1.0, 2, 3, 0 }, Masked.Whiten(x, m, shiftMean: false), 4); // scaled by 1/std = 1, mean kept
        Near(new[] { 1.5, 2.0 }, Masked.Mean(F(new[] { 1f, 2, 9, 2, 2, 9 }, 2, 3), Mask(new[] { 1, 1, 0 }, new[] { 1, 1, 0 }), dim: 1));
    }

    [Fact]
    public void ClippedPolicyLossInsideAndOutsideTheClip()
    {
        // Tokens (ratio, A): (1.5, 1) → max(−1.5, −1.2) = −1.2 clipped; (1.5, −1) → max(1.5, 1.2) = 1.5;
        // (1.1, 2) → −2.2 inside the clip; (0.5, −1) → max(0.5, 0.8) = 0.8 clipped; 5th token is padding.
        var old = zeros(1, 5);
        var logp = F(new[] { Ln(1.5), Ln(1.5), Ln(1.1), Ln(0.5), Ln(3) }, 1, 5).requires_grad_();
        var adv = F(new[] { 1f, -1, 2, -1, 10 }, 1, 5);
        var mask = Mask(new[] { 1, 1, 1, 1, 0 });
        var res = Ppo.PolicyLoss(logp, old, adv, mask, 0.2);
        Assert.Equal((-1.2 + 1.5 - 2.2 + 0.8) / 4, res.Loss.item<float>(), 5);
        Assert.Equal(0.5, res.ClipFraction, 5);
        double l15 = Math.Log(1.5), l11 = Math.Log(1.1), l05 = Math.Log(0.5);
        Assert.Equal(0.5 * (2 * l15 * l15 + l11 * l11 + l05 * l05) / 4, res.ApproxKl, 5);
        res.Loss.backward();
        // Clipped tokens and padding get no gradient; the others get d(−Aρ)/dlogp / 4 = −Aρ/4.
        Near(new[] { 0, 1.5 / 4, -2.2 / 4, 0, 0 }, logp.grad!);
    }

    [Fact]
    public void GarbageOnPaddingNeverBecomesNaN()
    {
        // Padding holds values whose exp overflows and a NaN advantage; loss, metrics and gradient stay finite.
        var logp = F(new[] { Ln(1.5), 1000f }, 1, 2).requires_grad_();
        var old = F(new[] { 0f, -1000f }, 1, 2);
        var adv = F(new[] { 1f, float.NaN }, 1, 2);
        var mask = Mask(new[] { 1, 0 });
        var res = Ppo.PolicyLoss(logp, old, adv, mask);
        Assert.Equal(-1.2f, res.Loss.item<float>(), 5);
        Assert.Equal(1.0, res.ClipFraction, 5);
        res.Loss.backward();
        Assert.All(V(logp.grad!), g => Assert.True(float.IsFinite(g)));
        Near(new[] { Math.Log(1.5), 0 }, Kl.PerToken(logp.detach(), zeros(1, 2), mask, KlEstimator.K1));
        Assert.True(float.IsFinite(Kl.PerToken(logp.detach(), old, mask, KlEstimator.K3).sum().item<float>()));
        Assert.Equal(0f, Masked.Whiten(F(new[] { 1f, float.PositiveInfinity }, 1, 2), mask).sum().item<float>(), 4);
    }

    [Fact]
    public void ClippedValueLoss()
    {
        // (V_old, V, R): (1, 1.5, 2) → V_clip 1.2: max(0.25, 0.64) = 0.64 clipped;
        // (1, 1.1, 0) → 1.21 either way; (0, 0.5, −1) → V_clip 0.2: max(2.25, 1.44) = 2.25; 4th is padding.
        var res = Ppo.ValueLoss(F(new[] { 1.5f, 1.1f, 0.5f, 9 }, 1, 4), F(new[] { 1f, 1, 0, 0 }, 1, 4),
            F(new[] { 2f, 0, -1, -9 }, 1, 4), Mask(new[] { 1, 1, 1, 0 }), 0.2);
        Assert.Equal(0.5 * (0.64 + 1.21 + 2.25) / 3, res.Loss.item<float>(), 5);
        Assert.Equal(1.0 / 3, res.ClipFraction, 5);
    }

    [Fact]
    public void KlEstimatorsAndFullKl()
    {
        var mask = Mask(new[] { 1, 0 });
        var logp = F(new[] { Ln(0.5), Ln(0.9) }, 1, 2);
        var refp = F(new[] { Ln(0.25), Ln(0.1) }, 1, 2);
        Near(new[] { Math.Log(2), 0 }, Kl.PerToken(logp, refp, mask, KlEstimator.K1));
        Near(new[] { 0.5 - 1 + Math.Log(2), 0 }, Kl.PerToken(logp, refp, mask, KlEstimator.K3)); // ℓ = −ln 2
        // p = (½, ½), q = (¾, ¼): KL = ½ ln(2/3) + ½ ln 2.
        var logits = F(new[] { 0f, 0, 0, 0 }, 1, 2, 2);
        var refLogits = F(new[] { Ln(3), 0, 0, 0 }, 1, 2, 2);
        Near(new[] { 0.5 * Math.Log(2.0 / 3) + 0.5 * Math.Log(2), 0 }, Kl.FullPerToken(logits, refLogits, mask));
        Near(new[] { Math.Log(2), 0 }, Kl.Entropy(logits, mask));
    }

    [Fact]
    public void ShapedRewardsAddKlEverywhereAndPenaliseMissingEos()
    {
        // Task score 2 on the last valid token; kl = [0.1, 0.2, −0.1], β = 0.5 → [−0.05, −0.1, 2.05].
        var task = F(new[] { 0f, 0, 2, 0, 0, 3, 0, 0 }, 2, 4);
        var kl = F(new[] { 0.1f, 0.2f, -0.1f, 5, 0.2f, 0, 9, 9 }, 2, 4);
        var mask = Mask(new[] { 1, 1, 1, 0 }, new[] { 1, 1, 0, 0 });
        Near(new[] { -0.05, -0.1, 2.05, 0, -0.1, 3, 0, 0 }, Ppo.ShapedRewards(task, kl, mask, 0.5));
        // Row 1 did not end with EOS: its score (on its last valid token) loses the penalty 1.
        var ended = tensor(new[] { true, false });
        Near(new[] { -0.05, -0.1, 2.05, 0, -0.1, 2, 0, 0 }, Ppo.ShapedRewards(task, kl, mask, 0.5, ended, 1.0));
    }

    [Fact]
    public void KlControllers()
    {
        var fixedKl = new FixedKlController(0.05);
        fixedKl.Update(100, 256);
        Assert.Equal(0.05, fixedKl.Value);

        var c = new AdaptiveKlController(0.1, target: 6, horizon: 10000);
        c.Update(12, 256);                           // KL/target − 1 = 1 → clipped to 0.2
        Assert.Equal(0.1 * (1 + 0.2 * 256 / 10000), c.Value, 12);
        double before = c.Value;
        c.Update(5.4, 1000);                         // −0.1, inside the clip
        Assert.Equal(before * (1 - 0.1 * 1000 / 10000), c.Value, 12);
    }

    [Fact]
    public void MismatchedShapesAreUserErrors()
    {
        var e = Assert.Throws<FineAlignException>(() => Ppo.Gae(zeros(2, 3), zeros(2, 4), ones(2, 3)));
        Assert.Contains("values", e.Message);
    }
}
