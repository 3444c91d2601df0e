using System.Diagnostics;
using FineAlign.Models;
using FineAlign.Rewards;
using FineAlign.Tests.Support;
using FineAlign.Text;
using FineAlign.Trainers;
using Xunit;

namespace FineAlign.Tests.PpoTraining;

[Collection("Serial torch RNG")]
public class PpoPhaseTimingTests
{
    [Fact]
    public void StepRecordsGenerationScoringAndUpdateSecondsThatFitInsideTheStep()
    {
        using var tmp = TestPaths.NewTempDir();
        var config = TinyModels.ByteLlama();
        using var policy = ModelFactory.Create(config, 1);
        using var reference = ModelFactory.Create(config, 1);
        using var value = ValueModel.Shared(policy, 1);
        var reward = ProgrammaticRewardSource.Sequence("len", e => e.ResponseIds.Length);
        using var trainer = new OnlineRlTrainer(policy, reference, value, new ByteTokenizer(), reward, ["a", "b"],
            OnlineRlOptions.Ppo with { OutputDir = tmp.Path, Steps = 1, BatchSize = 2, MiniBatchSize = 1, MaxNewTokens = 4 });
        Assert.Empty(trainer.LastStepSeconds);
        var sw = Stopwatch.StartNew();
        trainer.Step(1);
        double wall = sw.Elapsed.TotalSeconds;
        Assert.Equal(new[] { "generation", "scoring", "update" }, trainer.LastStepSeconds.Keys.Order());
        Assert.All(trainer.LastStepSeconds.Values, s => Assert.True(s > 0));
        Assert.True(trainer.LastStepSeconds.Values.Sum() <= wall);
    }
}
