using FineAlign.Objectives;
using static FineAlign.Tests.Objectives.T;
using static TorchSharp.torch;

namespace FineAlign.Tests.Objectives;

public class KtoLossTests
{
    // Examples: π = [−10, −12], π_ref = [−13, −10] ⇒ Δ = [3, −2]; labels [desirable, undesirable].
    // Mismatched: π = [−5, −6], π_ref = [−6, −9] ⇒ Δ' = [1, 3], mean 2 ⇒ z = max(0, 2) = 2.
    // desirable:   1 − σ(0.1·(3 − 2))    = 1 − σ(0.1) = 0.4750208
    // undesirable: 1 − σ(0.1·(2 − (−2))) = 1 − σ(0.4) = 0.4013123      mean 0.4381666
    private static ObjectiveResult Example(Tensor? policy = null, double lD = 1, double lU = 1, Tensor? mismatchedPolicy = null) =>
        KtoLoss.Compute(policy ?? V(-10, -12), V(-13, -10), B(true, false), mismatchedPolicy ?? V(-5, -6), V(-6, -9),
                        beta: 0.1, desirableWeight: lD, undesirableWeight: lU);

    [Fact]
    public void HandWorkedLossAndMetrics()
    {
        var r = Example();
        var l = Values(r.Losses);
        Assert.Equal(0.4750208, l[0], 5);
        Assert.Equal(0.4013123, l[1], 5);
        Assert.Equal(0.4381666, r.Loss.item<float>(), 5);
        Keys(r.Metrics, "kl", "rewards/chosen", "rewards/rejected", "logps/chosen", "logps/rejected");
        Assert.Equal(2.0, r.Metrics["kl"], 5);
        Assert.Equal(0.3, r.Metrics["rewards/chosen"], 5);     // β·3
        Assert.Equal(-0.2, r.Metrics["rewards/rejected"], 5);  // β·(−2)
        Assert.Equal(-10.0, r.Metrics["logps/chosen"], 5);
        Assert.Equal(-12.0, r.Metrics["logps/rejected"], 5);
    }

    [Fact]
    public void ReferencePointIsClampedAtZero()
    {
        // Mismatched Δ' = [−7, 5] ⇒ mean −1 ⇒ z = 0: desirable 1 − σ(0.3) = 0.4255575, undesirable 1 − σ(0.2) = 0.4501660.
        var r = Example(mismatchedPolicy: V(-13, -4));
        Assert.Equal(0.0, r.Metrics["kl"], 6);
        Assert.Equal(0.4255575, Values(r.Losses)[0], 5);
        Assert.Equal(0.4501660, Values(r.Losses)[1], 5);
    }

    [Fact]
    public void ClassWeightsScaleEachSide()
    {
        // λ_D = 2, λ_U = 0.5: [2·0.4750208, 0.5·0.4013123] = [0.9500416, 0.2006562], mean 0.5753489.
        var r = Example(lD: 2, lU: 0.5);
        Assert.Equal(0.5753489, r.Loss.item<float>(), 5);
    }

    [Fact]
    public void GradientsFollowLabelsAndSkipReferencePoint()
    {
        var policy = G(-10, -12);
        var mismatched = G(-5, -6);
        Example(policy: policy, mismatchedPolicy: mismatched).Loss.backward();
        var g = Grad(policy);
        // d/dΔ of (1 − σ(β(Δ − z)))/B = −β σ'(0.1)/2 = −0.05·σ(0.1)σ(−0.1) = −0.0124688
        Assert.Equal(-0.0124688, g[0], 6);
        Assert.True(g[1] > 0); // the undesirable completion is pushed down
        // z is detached: nothing flows into the mismatched completions.
        Assert.True(mismatched.grad is null || mismatched.grad.abs().sum().item<float>() == 0);
    }

    [Fact]
    public void AllDesirableBatchHasNoNaN()
    {
        var policy = G(-10, -12);
        var r = KtoLoss.Compute(policy, V(-13, -10), B(true, true), V(-5, -6), V(-6, -9));
        r.Loss.backward();
        AllFinite(r.Metrics);
        Assert.Equal(0.0, r.Metrics["rewards/rejected"]);
        Assert.Equal(0.0, r.Metrics["logps/rejected"]);
        Assert.Equal(0.05, r.Metrics["rewards/chosen"], 5); // β·(3 + (−2))/2
        Assert.All(Grad(policy), x => Assert.True(float.IsFinite(x) && x < 0));
    }

    [Fact]
    public void IntegerLabelsAreAccepted()
    {
        var r = KtoLoss.Compute(V(-10, -12), V(-13, -10), tensor(new long[] { 1, 0 }), V(-5, -6), V(-6, -9));
        Assert.Equal(0.4381666, r.Loss.item<float>(), 5);
    }

    [Fact]
    public void MismatchedPairsShiftCompletionsByOne()
    {
        var (prompts, completions) = KtoLoss.MismatchedPairs(4);
        Assert.Equal(new long[] { 0, 1, 2, 3 }, prompts);
        Assert.Equal(new long[] { 3, 0, 1, 2 }, completions);
        Assert.All(Enumerable.Range(0, 4), i => Assert.NotEqual(prompts[i], completions[i]));
        Assert.Equal(new long[] { 0 }, KtoLoss.MismatchedPairs(1).CompletionIndex);
        Assert.Throws<FineAlignException>(() => KtoLoss.MismatchedPairs(0));
    }

    [Fact]
    public void RejectsBadInputs()
    {
        Assert.Throws<FineAlignException>(() => KtoLoss.Compute(V(-1, -2), V(-1, -2), B(true), V(-1), V(-1)));
        Assert.Throws<FineAlignException>(() => KtoLoss.Compute(V(-1), V(-1), B(true), V(-1), V(-1), beta: -1));
        Assert.Throws<FineAlignException>(() => KtoLoss.Compute(V(-1), V(-1), B(true), V(-1, -2), V(-1)));
    }
}
