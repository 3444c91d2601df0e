using FineAlign.Objectives;
using FineAlign.Tests.Support;
using static FineAlign.Tests.Objectives.T;
using static TorchSharp.torch;

namespace FineAlign.Tests.Objectives;

public class BcoLossTests
{
    // π = [−5, −9, −13], π_ref = [−10, −10, −10] ⇒ Δ = [5, 1, −3], r = βΔ = [0.5, 0.1, −0.3]; labels [up, up, down].
    // Fresh shift: δ = mean r = 0.1 (count 3).
    // up:   −log σ(0.5 − 0.1) = 0.5130153;  up: −log σ(0.1 − 0.1) = log 2 = 0.6931472
    // down: −log σ(−(−0.3 − 0.1)) = −log σ(0.4) = 0.5130153;  mean 0.5730592
    private static ObjectiveResult Example(RewardShift shift, Tensor? policy = null, Tensor? weights = null) => Run(shift, policy, weights).Objective;

    private static BcoLossResult Run(RewardShift shift, Tensor? policy = null, Tensor? weights = null) =>
        BcoLoss.Compute(policy ?? V(-5, -9, -13), V(-10, -10, -10), B(true, true, false), shift, beta: 0.1, weights: weights);

    [Fact]
    public void HandWorkedLossAndMetrics()
    {
        var shift = new RewardShift();
        var (r, next) = Run(shift);
        var l = Values(r.Losses);
        Assert.Equal(0.5130153, l[0], 5);
        Assert.Equal(0.6931472, l[1], 5);
        Assert.Equal(0.5130153, l[2], 5);
        Assert.Equal(0.5730592, r.Loss.item<float>(), 5);
        Keys(r.Metrics, "delta", "rewards/chosen", "rewards/rejected", "logps/chosen", "logps/rejected");
        Assert.Equal(0.1, r.Metrics["delta"], 6);
        Assert.Equal(0.3, r.Metrics["rewards/chosen"], 5);    // (0.5 + 0.1)/2
        Assert.Equal(-0.3, r.Metrics["rewards/rejected"], 5);
        Assert.Equal(-7.0, r.Metrics["logps/chosen"], 5);
        Assert.Equal(-13.0, r.Metrics["logps/rejected"], 5);
        Assert.Equal(3, next.Count);
        Assert.Equal(new RewardShift(), shift); // δ is an input: the caller's value is not changed
    }

    [Fact]
    public void ShiftIsUpdatedBeforeTheLoss()
    {
        // Earlier state: mean 0.7 over 2 rewards. Merged with this batch (mean 0.1, 3 rewards):
        // δ = (2·0.7 + 3·0.1)/5 = 0.34. Losses: −log σ(0.16) = 0.6163438, −log σ(−0.24) = 0.8203300,
        // −log σ(0.64) = 0.4234965; mean 0.6200567.
        var shift = new RewardShift { Mean = 0.7, Count = 2 };
        var (r, next) = Run(shift);
        Assert.Equal(0.34, r.Metrics["delta"], 6);
        Assert.Equal(0.34, next.Mean, 6);
        Assert.Equal(5, next.Count);
        Assert.Equal(2, shift.Count);
        Assert.Equal(0.6200567, r.Loss.item<float>(), 5);
    }

    [Fact]
    public void EvaluationCanReadTheShiftWithoutUpdatingIt()
    {
        // δ stays 0.7: up −log σ(0.5 − 0.7) = −log σ(−0.2) = 0.7981389.
        var shift = new RewardShift { Mean = 0.7, Count = 2 };
        var (r, next) = BcoLoss.Compute(V(-5), V(-10), B(true), shift, updateShift: false);
        Assert.Equal(0.7, r.Metrics["delta"], 6);
        Assert.Equal(0.7981389, r.Loss.item<float>(), 5);
        Assert.Equal(shift, next);
    }

    [Fact]
    public void RunningMeanEqualsMeanOfEverythingSeen()
    {
        var gen = new Generator(7);
        var shift = new RewardShift();
        var seen = new List<float>();
        foreach (int n in new[] { 3, 1, 7, 2, 16 })
        {
            var batch = randn(n, generator: gen) * 3 + 1;
            seen.AddRange(batch.data<float>().ToArray());
            shift = shift.Merge(batch);
        }
        Assert.Same(shift, shift.Merge(5.0, 0)); // an empty batch changes nothing
        Assert.Equal(seen.Count, shift.Count);
        Assert.Equal(seen.Average(x => (double)x), shift.Mean, 6);
    }

    [Fact]
    public void ShiftRoundTripsThroughJson()
    {
        using var dir = TestPaths.NewTempDir();
        var path = Path.Combine(dir.Path, RewardShift.FileName);
        new RewardShift { Mean = -0.125, Count = 4096 }.Save(path);
        var back = RewardShift.Load(path);
        Assert.Equal(-0.125, back.Mean);
        Assert.Equal(4096, back.Count);
        File.WriteAllText(path, "{not json");
        Assert.Throws<FineAlignException>(() => RewardShift.Load(path));
    }

    [Fact]
    public void WeightsScalePerExampleLosses()
    {
        // weights [1, 1, 2]: (0.5130153 + 0.6931472 + 2·0.5130153)/3 = 0.7440643
        var r = Example(new RewardShift(), weights: V(1, 1, 2));
        Assert.Equal(0.7440643, r.Loss.item<float>(), 5);
        Assert.Throws<FineAlignException>(() => Example(new RewardShift(), weights: V(1, -1, 2)));
    }

    [Fact]
    public void GradientsFollowLabels()
    {
        var policy = G(-5, -9, -13);
        Example(new RewardShift(), policy: policy).Loss.backward();
        var g = Grad(policy);
        // up example 0: d/dπ of −log σ(r − δ)/3 = −β σ(−0.4)/3 = −0.1·0.4013123/3 = −0.0133771 (δ is a constant).
        Assert.Equal(-0.0133771, g[0], 6);
        Assert.True(g[1] < 0);
        Assert.True(g[2] > 0);
    }

    [Fact]
    public void OneSidedBatchHasNoNaN()
    {
        var r = BcoLoss.Compute(V(-5, -9), V(-10, -10), B(false, false), new RewardShift()).Objective;
        AllFinite(r.Metrics);
        Assert.Equal(0.0, r.Metrics["rewards/chosen"]);
        Assert.Equal(0.0, r.Metrics["logps/chosen"]);
        Assert.True(float.IsFinite(r.Loss.item<float>()));
    }
}
