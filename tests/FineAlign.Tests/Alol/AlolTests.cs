using FineAlign.Data.Corpus;
using System.Text.Json;
using FineAlign.Data;
using FineAlign.Generation;
using FineAlign.Models;
using FineAlign.Objectives;
using FineAlign.Rewards;
using FineAlign.Tests.Cli;
using FineAlign.Tests.Support;
using FineAlign.Text;
using FineAlign.Trainers;
using FineAlign.Training;

namespace FineAlign.Tests.OfflineRl;

/// <summary>Offline data reading, A-LoL training end to end, priority sampling, best-of-n and reward-guided decoding.</summary>
[Collection("Serial torch RNG")]
public class AlolTests
{
    private static string Write(string dir, string name, params string[] lines)
    {
        string path = Path.Combine(dir, name);
        File.WriteAllText(path, string.Join("\n", lines) + "\n");
        return path;
    }

    [Theory]
    [InlineData("{\"prompt\":\"a\",\"completion\":\"b\"}", "reward", "missing")]
    [InlineData("{\"prompt\":\"a\",\"completion\":\"b\",\"reward\":NaN}", null, null)]
    [InlineData("{\"prompt\":\"a\",\"completion\":\"b\",\"reward\":1e999}", "reward", "finite")]
    [InlineData("{\"prompt\":\"a\",\"completion\":\"b\",\"reward\":\"high\"}", "reward", "number")]
    [InlineData("{\"prompt\":\"a\",\"reward\":1}", "completion", "string")]
    public void BadRewardsNameFileLineAndField(string badLine, string? field, string? words)
    {
        using var dir = TestPaths.NewTempDir();
        string path = Write(dir.Path, "offline.jsonl", "{\"prompt\":\"x\",\"response\":\"y\",\"reward\":0.5}", badLine);
        var ex = Assert.ThrowsAny<FineAlignException>(() => OfflineReader.Read(path).ToList());
        Assert.Contains("offline.jsonl:2", ex.Message);
        if (field is not null) Assert.Contains(field, ex.Message);
        if (words is not null) Assert.Contains(words, ex.Message);
    }

    [Fact]
    public void ReaderAcceptsResponseFieldAndOptionalRewardWithASource()
    {
        using var dir = TestPaths.NewTempDir();
        string path = Write(dir.Path, "o.jsonl", "{\"prompt\":\"x\",\"response\":\"y\",\"reward\":-0.25}", "{\"prompt\":\"p\",\"completion\":\"q\"}");
        var rows = OfflineReader.Read(path, rewardOptional: true).ToList();
        Assert.Equal("y", rows[0].Example.Completion);
        Assert.Equal(-0.25, rows[0].Reward);
        Assert.True(double.IsNaN(rows[1].Reward));
        // A NaN reward that reaches training (no source rescored it) is refused with its line.
        var ds = OfflineDataset.FromExamples(rows, path, new ByteTokenizer(), new PreferenceEncoding { MaxLength = 48 });
        using var model = ModelFactory.Create(ModelPresets.Create("tiny", new ByteTokenizer(), 48), 1);
        var ex = Assert.Throws<DataFormatException>(() => AlolTrainer.Train(model, null, new ByteTokenizer(), ds,
            new TrainingOptions { OutputDir = Path.Combine(dir.Path, "run"), MaxSteps = 1 }, new AlolTrainerOptions()));
        Assert.Contains("o.jsonl:2", ex.Message);
        Assert.Contains("reward", ex.Message);
    }

    [Fact]
    public void NoisyBuiltinSetRelabelsOnlyNegativesWithTheNoiseReward()
    {
        var clean = BuiltinData.OfflineExamples(7, 400);
        var noisy = BuiltinData.OfflineExamples(7, 400, noiseFraction: 0.5, noiseReward: 1.0);
        Assert.Equal(0, clean.Mislabelled);
        Assert.InRange(noisy.Mislabelled, noisy.Negative / 4, noisy.Negative * 3 / 4);
        int changed = 0;
        for (int i = 0; i < clean.Train.Count; i++)
        {
            if (clean.Train[i].Reward == noisy.Train[i].Reward) continue;
            changed++;
            Assert.True(clean.Train[i].Reward < 0);
            Assert.Equal(1.0, noisy.Train[i].Reward);
        }
        Assert.Equal(noisy.Mislabelled, changed);
    }

    private static string ToyOffline(string dir)
    {
        // Responses " good!" are rewarded, " bad." penalised; prompts differ, so V(x) must learn the mean.
        return Write(dir, "toy.jsonl", Enumerable.Range(0, 40).Select(i => JsonSerializer.Serialize(new
        {
            prompt = $"Item {i}:", completion = i % 3 == 0 ? " bad." : " good!", reward = i % 3 == 0 ? -1.0 + 0.01 * i : 1.0 - 0.01 * i,
        })).ToArray());
    }

    [Theory]
    [InlineData("alol")]
    [InlineData("alol-ref-free")]
    [InlineData("alol-seq")]
    [InlineData("alol-kl")]
    public void EveryVariantTrainsEndToEndAndReportsDrops(string variant)
    {
        using var dir = TestPaths.NewTempDir();
        string model = CommandFixtures.SaveByteModel(Path.Combine(dir.Path, "init"), context: 48);
        string run = Path.Combine(dir.Path, "run");
        var (code, stdout, stderr) = CliRunner.Run("alol", "--model", model, "--data", ToyOffline(dir.Path), "--variant", variant, "--out", run,
            "--max-steps", "4", "--batch-size", "8", "--logging-steps", "1", "--save-steps", "0", "--threads", "1", "--learning-rate", "1e-3",
            "--value-steps", "200", "--priority-sampling", variant == "alol" ? "true" : "false");
        Assert.True(code == 0, stderr + stdout);
        Assert.Matches(@"kept \d+, dropped \d+ \(A ≤ 0\) of 40", stdout);
        var report = JsonSerializer.Deserialize<AlolDataReport>(File.ReadAllText(Path.Combine(run, "alol_data.json")))!;
        // The 14 " bad." responses sit far below any fitted V(x); the good ones straddle it.
        Assert.True(report.Dropped >= 14, $"dropped {report.Dropped}");
        Assert.True(report.Kept > 0);
        Assert.True(report.ValueMse < report.RewardVariance, $"value MSE {report.ValueMse} vs variance {report.RewardVariance}");
        var m = MetricsLogger.Read(Path.Combine(run, MetricsLogger.JsonlFile)).Where(e => e.ContainsKey("loss")).ToList();
        Assert.Equal(4, m.Count);
        Assert.All(m, e => Assert.True(double.IsFinite(e["loss"]) && double.IsFinite(e["kl"]) && double.IsFinite(e["importance_weight"])));
        Assert.All(m, e => Assert.True(e["advantage"] > 0, "only positive advantages are trained on"));
        using var saved = ModelIO.Load(Path.Combine(run, "model"));
        Assert.Equal(261, saved.Config.VocabSize);
        using var value = ScoredLM.Load(Path.Combine(run, "value"));
        Assert.Equal(HeadKind.Sequence, value.Kind);
    }

    [Fact]
    public void PrioritySamplingNeverDrawsNonPositiveAdvantages()
    {
        var adv = new double[] { 0.5, -1, 0, 2, -0.1, 1.5 };
        var draws = new PrioritySampler(adv, 3).Draw(5000);
        Assert.DoesNotContain(draws, i => adv[i] <= 0);
        // ∝ A⁺: index 3 (2.0) about four times as often as index 0 (0.5).
        double ratio = draws.Count(i => i == 3) / (double)draws.Count(i => i == 0);
        Assert.InRange(ratio, 3.3, 4.8);
    }

    [Fact]
    public void BestOfNKeepsTheCandidateWithTheHighestReward()
    {
        using var dir = TestPaths.NewTempDir();
        string folder = CommandFixtures.SaveByteModel(Path.Combine(dir.Path, "m"), context: 48);
        var tok = TokenizerLoader.Load(folder);
        using var model = ModelIO.Load(folder);
        // Reward = number of 'a' bytes: the argmax over the candidates is known from their texts.
        var reward = ProgrammaticRewardSource.Sequence("count_a", e => e.ResponseText!.Count(c => c == 'a'));
        var gen = new GenerationOptions { MaxNewTokens = 12, Seed = 9 };
        var picked = BestOfN.Generate(model, tok, ["x", "y"], reward, 6, gen);
        var all = TextGenerator.Generate(model, tok, ["x", "x", "x", "x", "x", "x", "y", "y", "y", "y", "y", "y"], gen);
        for (int p = 0; p < 2; p++)
        {
            var counts = all.Skip(p * 6).Take(6).Select(g => (double)g.Text.Count(c => c == 'a')).ToArray();
            Assert.Equal(counts, picked[p].CandidateRewards);
            Assert.Equal(counts.Max(), picked[p].Reward);
            Assert.Equal(counts.Max(), picked[p].Best.Text.Count(c => c == 'a'));
        }
    }

    [Fact]
    public void RewardGuidedDecodingBeatsPlainSamplingOnAverage()
    {
        using var dir = TestPaths.NewTempDir();
        string folder = CommandFixtures.SaveByteModel(Path.Combine(dir.Path, "m"), context: 64);
        var tok = TokenizerLoader.Load(folder);
        using var model = ModelIO.Load(folder);
        var reward = ProgrammaticRewardSource.Sequence("vowels", e => e.ResponseText!.Count(c => "aeiou".Contains(c)));
        var prompts = Enumerable.Range(0, 8).Select(i => $"p{i}").ToList();
        var gen = new GenerationOptions { MaxNewTokens = 24, Seed = 4 };
        var plain = BestOfN.Generate(model, tok, prompts, reward, 1, gen);
        var guided = RewardGuidedDecoding.Generate(model, tok, prompts, reward, 4, 6, gen);
        Assert.All(guided, g => Assert.True(g.Best.Tokens.Length <= 24));
        // The reported reward is the reward of the returned text.
        Assert.All(guided, g => Assert.Equal(g.Reward, g.Best.Text.Count(c => "aeiou".Contains(c))));
        Assert.True(guided.Average(g => g.Reward) > plain.Average(g => g.Reward),
            $"guided {guided.Average(g => g.Reward)} vs plain {plain.Average(g => g.Reward)}");
    }

    [Fact]
    public void BonCommandReportsPlainAndChosenRewards()
    {
        using var dir = TestPaths.NewTempDir();
        string folder = CommandFixtures.SaveByteModel(Path.Combine(dir.Path, "m"), context: 64);
        string outFile = Path.Combine(dir.Path, "bon.jsonl");
        var (code, stdout, stderr) = CliRunner.Run("bon", "--model", folder, "--num-prompts", "3", "--n", "3", "--max-new-tokens", "16",
            "--corpus-size", "200", "--out", outFile, "--threads", "1");
        Assert.True(code == 0, stderr + stdout);
        Assert.Contains("best-of-3", stdout);
        Assert.Equal(3, CommandFixtures.ReadJsonl(outFile).Count);
    }

    [Fact]
    public void BonTakesItsPromptsFromAPreferenceFile()
    {
        using var dir = TestPaths.NewTempDir();
        string folder = CommandFixtures.SaveByteModel(Path.Combine(dir.Path, "m"), context: 64);
        string pairs = Path.Combine(dir.Path, "pairs.jsonl");
        File.WriteAllLines(pairs,
        [
            """{"prompt": "Q1:", "chosen": " yes", "rejected": " no"}""",
            """{"prompt": "Q1:", "chosen": " sure", "rejected": " nope"}""",
            """{"prompt": "Q2:", "chosen": " a", "rejected": " b"}""",
        ]);
        string outFile = Path.Combine(dir.Path, "bon.jsonl");
        var (code, stdout, stderr) = CliRunner.Run("bon", "--model", folder, "--prompts", pairs, "--n", "2", "--max-new-tokens", "4",
            "--out", outFile, "--threads", "1");
        Assert.True(code == 0, stderr + stdout);
        var rows = CommandFixtures.ReadJsonl(outFile);
        Assert.Equal(["Q1:", "Q1:", "Q2:"], rows.Select(r => r["prompt"]!.GetValue<string>()));   // one prompt per pair, as PPO reads them
    }

    [Fact]
    public void TokenLevelRewardsReplaceTheSequenceRewardByTheirSum()
    {
        var tok = new ByteTokenizer();
        var rows = new[] { ("Q1:", " abc"), ("Q2:", " hello!") }
            .Select((x, i) => new OfflineExample(i + 1, new PromptCompletionExample(i + 1, x.Item1, x.Item2), double.NaN)).ToList();
        var ds = OfflineDataset.FromExamples(rows, "mem", tok, new PreferenceEncoding { MaxLength = 48 });
        var source = ProgrammaticRewardSource.Token("half", e => e.ResponseIds.Select(_ => 0.5f).ToArray());
        var scored = AlolTrainer.Rescore(ds, source, tok);
        for (int i = 0; i < 2; i++)
            Assert.Equal(0.5 * ds.Examples[i].Sequence.Completion.Length, scored.Examples[i].Reward, 5);
    }

    [Fact]
    public void CliNamesTheLineOfANonFiniteReward()
    {
        using var dir = TestPaths.NewTempDir();
        string model = CommandFixtures.SaveByteModel(Path.Combine(dir.Path, "init"), context: 48);
        string data = Write(dir.Path, "bad.jsonl", "{\"prompt\":\"a\",\"completion\":\"b\",\"reward\":1}", "{\"prompt\":\"a\",\"completion\":\"b\",\"reward\":-1e999}");
        var (code, stdout, stderr) = CliRunner.Run("alol", "--model", model, "--data", data, "--out", Path.Combine(dir.Path, "run"), "--max-steps", "1");
        Assert.NotEqual(0, code);
        Assert.Contains("bad.jsonl:2", stderr);
        Assert.Contains("reward", stderr);
        Assert.Single(CliRunner.Lines(stderr));
    }
}
