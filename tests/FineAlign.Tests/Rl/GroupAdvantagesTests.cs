using FineAlign.Objectives;
using TorchSharp;
using static TorchSharp.torch;
using static FineAlign.Tests.Rl.RlTensors;

namespace FineAlign.Tests.Rl;

public class GroupAdvantagesTests
{
    // Two prompts × G = 4: group 0 = [1, 2, 3, 6] (mean 3, centred [−2, −1, 0, 3]), group 1 = all 5 (no spread).
    private static Tensor Rewards() => F(new[] { 1f, 2, 3, 6, 5, 5, 5, 5 }, 8);

    [Fact]
    public void GrpoGroupScaling()
    {
        // Unbiased group std = sqrt((4 + 1 + 0 + 9) / 3) = sqrt(14/3).
        double s = Math.Sqrt(14.0 / 3) + 1e-4;
        var r = GroupAdvantages.Grpo(Rewards(), 4);
        Near(new[] { -2 / s, -1 / s, 0, 3 / s, 0, 0, 0, 0 }, r.Advantages);
        Assert.Equal(1, r.ZeroStdGroups);
        Assert.DoesNotContain(V(r.Advantages), float.IsNaN);
    }

    [Fact]
    public void ZeroSpreadGroupsAreCountedAsTrlDoes()
    {
        // TRL: torch.isclose(std, 0) with atol 1e-8. Group [1, 1 + 2⁻²⁰]: std = 2⁻²⁰ / √2 ≈ 6.7e-7 > 1e-8, a spread TRL counts
        // as signal (the earlier relative rule, max − min ≤ 1e-6 · max|R|, called it zero). Group [3, 3] is exactly 0.
        float tiny = 1f + MathF.Pow(2, -20);
        var r = GroupAdvantages.Grpo(tensor(new[] { 1f, tiny, 3f, 3f }), 2, RewardScaling.None);
        Assert.Equal(1, r.ZeroStdGroups);
        Assert.Equal(1, GroupAdvantages.Rloo(tensor(new[] { 1f, tiny, 3f, 3f }), 2).ZeroStdGroups);
    }

    [Fact]
    public void GrpoBatchAndNoScaling()
    {
        // Batch std over all 8: mean 4, squared deviations 9+4+1+4+1+1+1+1 = 22, unbiased var 22/7.
        double s = Math.Sqrt(22.0 / 7) + 1e-4;
        Near(new[] { -2 / s, -1 / s, 0, 3 / s, 0, 0, 0, 0 }, GroupAdvantages.Grpo(Rewards(), 4, RewardScaling.Batch).Advantages);
        var none = GroupAdvantages.Grpo(Rewards(), 4, RewardScaling.None);
        Near(new[] { -2.0, -1, 0, 3, 0, 0, 0, 0 }, none.Advantages);
        Assert.Equal(1, none.ZeroStdGroups);
    }

    [Fact]
    public void RlooLeaveOneOutBaseline()
    {
        // b_i = (12 − R_i)/3 = [11/3, 10/3, 3, 2] → A = [−8/3, −4/3, 0, 4] (= G/(G−1) · centred).
        var r = GroupAdvantages.Rloo(Rewards(), 4);
        Near(new[] { -8.0 / 3, -4.0 / 3, 0, 4, 0, 0, 0, 0 }, r.Advantages);
        Assert.Equal(1, r.ZeroStdGroups);
    }

    [Fact]
    public void GroupOfOneIsAClearError()
    {
        var e = Assert.Throws<FineAlignException>(() => GroupAdvantages.Rloo(Rewards(), 1));
        Assert.Contains("at least 2 samples", e.Message);
        Assert.Throws<FineAlignException>(() => GroupAdvantages.Grpo(Rewards(), 3)); // 8 is not a multiple of 3
    }

    [Fact]
    public void SequenceRewardsFoldKlThroughTheShapingFunction()
    {
        // Row 0: score 2, kl [0.1, 0.3, 0.2] → 2 − 0.5·0.6 = 1.7; row 1: dense [1, 1], kl [0.4, 0.4], padding ignored → 2 − 0.4 = 1.6.
        var task = F(new[] { 0f, 0, 2, 1, 1, 50 }, 2, 3);
        var kl = F(new[] { 0.1f, 0.3f, 0.2f, 0.4f, 0.4f, 50 }, 2, 3);
        var mask = Mask(new[] { 1, 1, 1 }, new[] { 1, 1, 0 });
        Near(new[] { 1.7, 1.6 }, GroupAdvantages.SequenceRewards(task, mask, kl, 0.5));
        Near(new[] { 2.0, 2.0 }, GroupAdvantages.SequenceRewards(task, mask));
    }

    [Fact]
    public void ReinforcePlusPlusRewardToGoNormalisedOverTheBatch()
    {
        // β = 1. Row 0: task [0, 0, 1], kl 0.1 each → r = [−0.1, −0.1, 0.9] → returns [0.7, 0.8, 0.9].
        // Row 1: task [0, 2, pad], kl [0.2, 0, pad] → r = [−0.2, 2] → returns [1.8, 2.0].
        // Valid returns: mean 6.2/5 = 1.24; squared deviations sum 1.492; population variance 1.492/5 = 0.2984, as OpenRLHF
        // (the method's reference implementation: var over all valid tokens ÷ n, clamped at 1e-8). This test expected the
        // Bessel-corrected 1.492/4 = 0.373 before the #14 exactness fix.
        var task = F(new[] { 0f, 0, 1, 0, 2, 99 }, 2, 3);
        var kl = F(new[] { 0.1f, 0.1f, 0.1f, 0.2f, 0, 99 }, 2, 3);
        var mask = Mask(new[] { 1, 1, 1 }, new[] { 1, 1, 0 });
        double sd = Math.Sqrt(0.2984);
        var expected = new[] { 0.7, 0.8, 0.9, 1.8, 2.0 }.Select(g => (g - 1.24) / sd).ToList();
        expected.Insert(5, 0);
        Near(expected.ToArray(), GroupAdvantages.ReinforcePlusPlus(task, kl, mask, 1.0), 4);
    }

    [Fact]
    public void ReinforcePlusPlusWithEqualReturnsGivesZeroNotNaN()
    {
        // All valid returns 1: variance 0 is clamped at 1e-8, so (x − mean) · 1e4 = 0 everywhere.
        var task = F(new[] { 0f, 1, 0, 1 }, 2, 2);
        var mask = Mask(new[] { 1, 1 }, new[] { 1, 1 });
        Near(new[] { 0.0, 0, 0, 0 }, GroupAdvantages.ReinforcePlusPlus(task, zeros(2, 2), mask, 0.0), 6);
    }

    [Fact]
    public void LossAggregationModes()
    {
        var loss = F(new[] { 1f, 2, 3, 4, 70, 80 }, 2, 3);
        var mask = Mask(new[] { 1, 1, 1 }, new[] { 1, 0, 0 });
        Assert.Equal(3f, GroupAdvantages.Aggregate(loss, mask, LossAggregation.Grpo).item<float>(), 5);     // mean(2, 4)
        Assert.Equal(2.5f, GroupAdvantages.Aggregate(loss, mask, LossAggregation.Token).item<float>(), 5);  // 10 / 4
        Assert.Equal(10f / 6, GroupAdvantages.Aggregate(loss, mask, LossAggregation.DrGrpo).item<float>(), 5); // 10 / (2·3)
        Assert.Equal(1f, GroupAdvantages.Aggregate(loss, mask, LossAggregation.DrGrpo, maxLength: 5).item<float>(), 5);
        // A row with no valid token contributes 0, not NaN.
        Assert.Equal(1f, GroupAdvantages.Aggregate(loss, Mask(new[] { 1, 1, 1 }, new[] { 0, 0, 0 }), LossAggregation.Grpo).item<float>(), 5);
    }

    [Fact]
    public void GroupPolicyLossBroadcastsAdvantagesAndAddsK3()
    {
        // ρ = 1 everywhere: per-token loss = −A; advantages [1, −2] broadcast to the valid tokens.
        var mask = Mask(new[] { 1, 1 }, new[] { 1, 0 });
        var tokenAdv = GroupAdvantages.ToTokens(F(new[] { 1f, -2 }, 2), mask);
        Near(new[] { 1.0, 1, -2, 0 }, tokenAdv);
        var logp = F(new[] { Ln(0.5), Ln(0.5), Ln(0.5), Ln(0.5) }, 2, 2);
        var grpo = GroupAdvantages.PolicyLoss(logp, logp, tokenAdv, mask, LossAggregation.Grpo);
        Assert.Equal((-1 + 2) / 2f, grpo.item<float>(), 5);
        // k3 with ℓ = ln 0.25 − ln 0.5 = −ln 2 per valid token: 0.5 − 1 + ln 2; β = 0.1 added to every valid token.
        var refLogp = F(new[] { Ln(0.25), Ln(0.25), Ln(0.25), Ln(0.25) }, 2, 2);
        var withKl = GroupAdvantages.PolicyLoss(logp, logp, tokenAdv, mask, LossAggregation.Token, refLogp: refLogp, klBeta: 0.1);
        Assert.Equal((-1 - 1 + 2) / 3.0 + 0.1 * (Math.Log(2) - 0.5), withKl.item<float>(), 5);
    }
}
