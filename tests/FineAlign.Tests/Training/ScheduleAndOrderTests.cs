using FineAlign.Training;

namespace FineAlign.Tests.Training;

public class ScheduleAndOrderTests
{
    [Theory]
    [InlineData(LrSchedulerType.Linear, 0, 0.0)]
    [InlineData(LrSchedulerType.Linear, 5, 0.5)]
    [InlineData(LrSchedulerType.Linear, 10, 1.0)]
    [InlineData(LrSchedulerType.Linear, 60, 0.5)]
    [InlineData(LrSchedulerType.Linear, 110, 0.0)]
    [InlineData(LrSchedulerType.Cosine, 10, 1.0)]
    [InlineData(LrSchedulerType.Cosine, 35, 0.85355339059327373)] // 0.5 (1 + cos(π/4))
    [InlineData(LrSchedulerType.Cosine, 60, 0.5)]
    [InlineData(LrSchedulerType.Cosine, 110, 0.0)]
    [InlineData(LrSchedulerType.Constant, 3, 0.3)]
    [InlineData(LrSchedulerType.Constant, 100, 1.0)]
    public void FactorAtHandPickedSteps(LrSchedulerType type, long step, double expected)
        => Assert.Equal(expected, LrSchedule.Factor(type, step, warmupSteps: 10, totalSteps: 110), 12);

    [Fact]
    public void WarmupRatioRoundsUpAndScalesTheBaseRate()
    {
        var o = new TrainingOptions { LearningRate = 2e-3, WarmupRatio = 0.1, LrSchedulerType = LrSchedulerType.Constant };
        Assert.Equal(10, o.WarmupStepsFor(95)); // ceil(9.5)
        Assert.Equal(2e-3 * 4 / 10, LrSchedule.LearningRate(o, 4, 95), 15);
        Assert.Equal(3, (o with { WarmupSteps = 3 }).WarmupStepsFor(95)); // explicit steps win
    }

    [Fact]
    public void BadOptionNamesTheField()
    {
        var e = Assert.Throws<FineAlignException>(() => new TrainingOptions { GradientAccumulationSteps = 0 }.Validate());
        Assert.Contains("gradient_accumulation_steps", e.Message);
    }

    [Fact]
    public void PermutationIsFixedBySeedAndEpoch()
    {
        var a = DataOrder.Permutation(50, seed: 7, epoch: 0);
        Assert.Equal(Enumerable.Range(0, 50), a.Order());
        Assert.Equal(a, DataOrder.Permutation(50, 7, 0));
        Assert.NotEqual(a, DataOrder.Permutation(50, 7, 1));
        Assert.NotEqual(a, DataOrder.Permutation(50, 8, 0));
        Assert.NotEqual(Enumerable.Range(0, 50).ToArray(), a);
    }

    [Fact]
    public void RngStateRoundTrips()
    {
        var r = new SplitMix64(123);
        r.NextUInt64();
        ulong saved = r.State;
        var expected = new[] { r.NextUInt64(), r.NextUInt64() };
        var restored = new SplitMix64(0) { State = saved };
        Assert.Equal(expected, new[] { restored.NextUInt64(), restored.NextUInt64() });
        Assert.InRange(restored.NextDouble(), 0.0, 1.0);
    }

    [Fact]
    public void DataPositionWrapsIntoTheNextEpoch()
    {
        var p = new DataPosition(0, 1).Next(batchesPerEpoch: 3);
        Assert.Equal(new DataPosition(0, 2), p);
        Assert.Equal(new DataPosition(1, 0), p.Next(3));
        Assert.Equal(3, DataOrder.BatchesPerEpoch(5, 2)); // last batch smaller
    }
}
