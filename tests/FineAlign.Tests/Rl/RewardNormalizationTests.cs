using FineAlign.Models;
using FineAlign.Rewards;
using FineAlign.Tests.Cli;
using FineAlign.Tests.Support;
using FineAlign.Text;
using FineAlign.Trainers;
using static TorchSharp.torch;

namespace FineAlign.Tests.Rl;

/// <summary><c>--reward-normalize</c> / <c>--reward-clip</c>: running whitening per component, against hand-worked numbers, and resume.</summary>
[Collection("Serial torch RNG")]
public class RewardNormalizationTests
{
    /// <summary>A sequence reward that returns the next scores of a script, one per response.</summary>
    private static RewardSource Scripted(string name, Queue<double> scores) => ProgrammaticRewardSource.Sequence(name, _ => scores.Dequeue());

    private static RewardBatch Batch(int rows, int time = 2)
    {
        var ids = zeros(new long[] { rows, time }, int64);
        return new RewardBatch(ids, ones(new long[] { rows, time }));
    }

    private static float[] Totals(TokenRewards r) => r.SequenceTotals().data<float>().ToArray();

    [Fact]
    public void WhiteningUsesRunningStatisticsUpdatedBeforeUse()
    {
        var source = new NormalizedRewardSource(Scripted("s", new([1, 2, 3, 6, 6])), new RewardNormalization { Whiten = true });
        // Batch 1: {1, 2, 3}: mean 2, sample std sqrt(((−1)² + 0² + 1²) / 2) = 1 → −1, 0, 1 (its own statistics: updated before use).
        using (var r = source.Compute(Batch(3)))
        {
            Assert.Equal(new[] { -1f, 0f, 1f }, Totals(r).Select(x => MathF.Round(x, 5)));
            Assert.Equal(2.0, r.Metrics["rewards/s_mean"], 9);
            Assert.Equal(1.0, r.Metrics["rewards/s_std"], 9);
            Assert.Equal(2.0, r.Metrics["rewards/s"], 5);   // the raw reward is still logged
        }
        // Batch 2: {6, 6} joins: n 5, mean 18/5 = 3.6, Σ(x − 3.6)² = 6.76 + 2.56 + 0.36 + 5.76 + 5.76 = 21.2, std sqrt(21.2 / 4) = 2.3021729;
        // (6 − 3.6) / 2.3021729 = 1.0424934 on the last token.
        using (var r = source.Compute(Batch(2)))
        {
            Assert.All(Totals(r), x => Assert.Equal(1.0424934, x, 5));
            Assert.Equal(new[] { 0f, 1.0424934f, 0f, 1.0424934f }, r.Values.data<float>().ToArray(), new Near(1e-5f));
            Assert.Equal(3.6, r.Metrics["rewards/s_mean"], 9);
            Assert.Equal(Math.Sqrt(5.3), r.Metrics["rewards/s_std"], 9);
            Assert.Equal(1.0424934, r.Metrics["rewards/s_normalized"], 5);
        }
        Assert.Equal(new RunningMomentsState(5, 3.6, 21.2), source.Moments!.State with { Mean = Math.Round(source.Moments.State.Mean, 12), M2 = Math.Round(source.Moments.State.M2, 12) });
    }

    [Fact]
    public void ClippingBoundsTheWhitenedRewardAndTokenRewardsKeepTheirShape()
    {
        var clipped = new NormalizedRewardSource(Scripted("s", new([1, 2, 3, 6, 6])), new RewardNormalization { Whiten = true, Clip = 1.0 });
        clipped.Compute(Batch(3)).Dispose();
        using (var r = clipped.Compute(Batch(2))) Assert.All(Totals(r), x => Assert.Equal(1.0, x, 6));   // 1.042 → 1

        // Token rewards [0.5, 0.5, 1] (total 2) and [1, 2, pad] (total 3): mean 2.5, std sqrt(0.5) = 0.7071068, scale 1.4142136.
        // Row 1 → [0.7071068, 0.7071068, 1.4142136 − 2.5 · 1.4142136 = −2.1213203], total (2 − 2.5) / 0.7071068 = −0.7071068.
        var rewards = new Queue<float[]>([[0.5f, 0.5f, 1f], [1f, 2f]]);
        var token = new NormalizedRewardSource(ProgrammaticRewardSource.Token("t", _ => rewards.Dequeue()), new RewardNormalization { Whiten = true });
        var batch = new RewardBatch(zeros(new long[] { 2, 3 }, int64), tensor(new float[] { 1, 1, 1, 1, 1, 0 }, new long[] { 2, 3 }));
        using var t = token.Compute(batch);
        var v = t.Values.data<float>().ToArray();
        Assert.Equal(new[] { 0.7071068f, 0.7071068f, -2.1213203f, 1.4142135f, 2.828427f - 2.5f * 1.4142135f, 0f }, v, new Near(1e-5f));
        Assert.Equal(new[] { -0.7071068f, 0.7071068f }, Totals(t), new Near(1e-5f));
    }

    private sealed class Near(float tol) : IEqualityComparer<float>
    {
        public bool Equals(float a, float b) => Math.Abs(a - b) <= tol;
        public int GetHashCode(float x) => 0;
    }

    [Fact]
    public void EachComponentOfAWeightedSumHasItsOwnStatistics()
    {
        var norm = new RewardNormalization { Whiten = true };
        var sum = new WeightedRewardSum("total",
            (new NormalizedRewardSource(Scripted("a", new([1, 3])), norm), 1.0),
            (new NormalizedRewardSource(Scripted("b", new([100, 300])), norm), 0.5));
        using var r = sum.Compute(Batch(2));
        // a: mean 2, std √2 → ∓0.7071068; b: mean 200, std √20000 → the same ∓0.7071068; total = 1.5 × that.
        Assert.Equal(new[] { -1.0606602f, 1.0606602f }, Totals(r), new Near(1e-5f));
        Assert.Equal(2.0, r.Metrics["rewards/a_mean"], 9);
        Assert.Equal(200.0, r.Metrics["rewards/b_mean"], 9);
        Assert.Equal(Math.Sqrt(20000), r.Metrics["rewards/b_std"], 6);
        var saved = RewardNormalization.Save(sum)!;
        Assert.Equal(["a", "b"], saved.Keys.Order());
    }

    private static RewardSource Rewards(RewardNormalization norm) => new WeightedRewardSum("total",
        (new NormalizedRewardSource(ProgrammaticRewardSource.Sequence("len", e => e.ResponseIds.Sum() % 5 + e.ResponseIds.Length), norm), 1.0),
        (new NormalizedRewardSource(ProgrammaticRewardSource.Sequence("ids", e => e.ResponseIds.Sum() % 7), norm), 0.5));

    private static OnlineRlTrainer Trainer(string modelDir, string outDir, int steps, bool resume, RewardNormalization norm, List<IDisposable> owned)
    {
        var policy = ModelIO.Load(modelDir); var reference = ModelIO.Load(modelDir);
        owned.Add(policy); owned.Add(reference);
        return new OnlineRlTrainer(policy, reference, null, new ByteTokenizer(), Rewards(norm), ["once", "the cat", "a dog", "up"],
            OnlineRlOptions.Grpo with { OutputDir = outDir, Steps = steps, BatchSize = 4, NumGenerations = 2, MaxNewTokens = 4, LearningRate = 3e-2, SaveSteps = 1, Resume = resume })
        { WriteTensorBoard = false };
    }

    [Fact]
    public void AResumedRunRestoresTheRunningStatisticsAndMatchesAnUninterruptedOne()
    {
        using var tmp = TestPaths.NewTempDir();
        string modelDir = CommandFixtures.SaveByteModel(Path.Combine(tmp.Path, "model"));
        var norm = new RewardNormalization { Whiten = true, Clip = 3 };
        var owned = new List<IDisposable>();
        try
        {
            var whole = Trainer(modelDir, Path.Combine(tmp.Path, "a"), 2, false, norm, owned).Train().LogHistory;
            Trainer(modelDir, Path.Combine(tmp.Path, "b"), 1, false, norm, owned).Train();
            var resumed = Trainer(modelDir, Path.Combine(tmp.Path, "b"), 2, true, norm, owned).Train().LogHistory;
            Assert.Equal(2, resumed.Count);
            foreach (var key in new[] { "rewards/len_mean", "rewards/len_std", "rewards/ids_mean", "rewards/ids_std", "rewards/total", "reward", "loss" })
                Assert.Equal(whole[1][key], resumed[1][key], 6);
            Assert.NotEqual(whole[0]["rewards/len_mean"], whole[1]["rewards/len_mean"]);   // the statistics did move

            // A checkpoint written with normalisation does not resume without it (the run would not be the same).
            var ex = Assert.Throws<FineAlignException>(() => Trainer(modelDir, Path.Combine(tmp.Path, "b"), 3, true, new RewardNormalization(), owned).Train());
            Assert.Contains("--reward-normalize", ex.Message);
        }
        finally { foreach (var d in owned) d.Dispose(); }
    }

    [Fact]
    public void TheFlagsReachTheTrainerAndItsMetrics()
    {
        using var tmp = TestPaths.NewTempDir();
        string modelDir = CommandFixtures.SaveByteModel(Path.Combine(tmp.Path, "model"));
        string outDir = Path.Combine(tmp.Path, "grpo");
        var (code, stdout, err) = CliRunner.Run("grpo", "--policy", modelDir, "--out", outDir, "--steps", "1", "--batch-size", "4", "--num-generations", "2",
            "--max-new-tokens", "4", "--corpus-size", "60", "--threads", "1", "--reward", "lexicon", "--reward", "lexicon:token@0.5",
            "--reward-normalize", "true", "--reward-clip", "2");
        Assert.True(code == 0, err + stdout);
        var m = CommandFixtures.ReadJsonl(Path.Combine(outDir, "metrics.jsonl"))[0];
        foreach (var key in new[] { "rewards/lexicon_mean", "rewards/lexicon_std", "rewards/lexicon_token_normalized", "rewards/total" }) Assert.True(m.ContainsKey(key), key);
        var (bad, _, badErr) = CliRunner.Run("grpo", "--policy", modelDir, "--out", Path.Combine(tmp.Path, "x"), "--reward-clip", "-1");
        Assert.NotEqual(0, bad);
        Assert.Contains("--reward-clip", badErr);
    }
}
