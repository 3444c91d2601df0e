using System.Text.Json.Nodes;
using FineAlign.Data;
using FineAlign.Models;
using FineAlign.Rewards;
using FineAlign.Tests.Cli;
using FineAlign.Tests.Support;
using FineAlign.Text;
using FineAlign.Trainers;
using static TorchSharp.torch;

namespace FineAlign.Tests.Rl;

/// <summary>Dataset columns to rewards: a prompt file's extra fields reach the reward (TRL's reward functions get dataset columns).</summary>
[Collection("Serial torch RNG")]
public class DatasetColumnRewardTests
{
    private static RewardBatch Texts(string[] responses, params string[] solutions) => new(
        zeros(new long[] { responses.Length, 1 }, int64), ones(new long[] { responses.Length, 1 }), null, responses.Select(_ => "q").ToList(), responses,
        solutions.Select(s => (IReadOnlyDictionary<string, string>)new Dictionary<string, string> { ["solution"] = s }).ToList());

    private static float[] Scores(RewardSource source, RewardBatch batch) { using var r = source.Compute(batch); return r.Values.data<float>().ToArray(); }

    [Fact]
    public void ExactMatchAndNumericCompareWithTheRowsSolution()
    {
        var exact = RewardSpecs.Build(["exact-match:solution"], new ByteTokenizer());
        Assert.Equal(["solution"], exact.Columns);
        Assert.Equal(new[] { 1f, 0f, 0f }, Scores(exact, Texts([" Paris \n", "paris", "Paris!"], "Paris", "Paris", "Paris")));
        Assert.Equal(new[] { 1f }, Scores(exact, Texts(["New  York"], "New York")));   // whitespace runs count as one space

        var numeric = RewardSpecs.Build(["numeric:solution"], new ByteTokenizer());
        // The answer after the last '####' (GSM8K), else the last number; commas are thousands separators.
        Assert.Equal(new[] { 1f, 1f, 0f, 1f, 0f },
            Scores(numeric, Texts(["so 3 + 4 = 7", "#### 1,234 apples (or 5)", "I think 8", "-0.5", "no idea"], "#### 7", "1234", "7", "x is -0.50", "3")));
        Assert.Equal(1234.0, AnswerReward.Number("a 12 #### 1,234 b 9"));
        Assert.Null(AnswerReward.Number("none"));

        // A batch without the column is a one-line error naming the source, the column and the row.
        var ex = Assert.Throws<FineAlignException>(() => numeric.Compute(new RewardBatch(zeros(new long[] { 1, 1 }, int64), ones(new long[] { 1, 1 }), null, ["q"], ["7"])));
        Assert.Contains("'solution'", ex.Message);
        Assert.Contains("batch index 0", ex.Message);
    }

    [Fact]
    public void PromptRowsCarryTheirOtherFieldsAsColumns()
    {
        using var tmp = TestPaths.NewTempDir();
        string path = Path.Combine(tmp.Path, "p.jsonl");
        CommandFixtures.WriteLines(path, "{\"prompt\": \"2+2?\", \"solution\": \"4\", \"n\": 4, \"meta\": {\"a\": [1]}, \"gone\": null}", "{\"prompt\": \"3+3?\", \"solution\": \"6\"}");
        var (rows, _) = PromptReader.ReadRows(path);
        Assert.Equal(["2+2?", "3+3?"], rows.Select(r => r.Prompt));
        Assert.Equal("4", rows[0].Columns["solution"]);
        Assert.Equal("4", rows[0].Columns["n"]);
        Assert.Equal("{\"a\":[1]}", rows[0].Columns["meta"]);
        Assert.False(rows[0].Columns.ContainsKey("prompt") || rows[0].Columns.ContainsKey("gone"));
        Assert.Equal(2, rows[1].Line);
    }

    [Fact]
    public void TheTrainerHandsEachResponseItsPromptsColumns()
    {
        using var tmp = TestPaths.NewTempDir();
        string modelDir = CommandFixtures.SaveByteModel(Path.Combine(tmp.Path, "model"));
        using var policy = ModelIO.Load(modelDir);
        using var reference = ModelIO.Load(modelDir);
        string[] prompts = ["a", "b", "c"];
        var columns = new[] { "1", "2", "3" }.Select(v => (IReadOnlyDictionary<string, string>)new Dictionary<string, string> { ["solution"] = v }).ToList();
        var reward = ProgrammaticRewardSource.Sequence("sol", e => double.Parse(e.Columns!["solution"]), ["solution"]);
        string outDir = Path.Combine(tmp.Path, "grpo");
        using (var trainer = new OnlineRlTrainer(policy, reference, null, new ByteTokenizer(), reward, prompts,
            OnlineRlOptions.Grpo with { OutputDir = outDir, Steps = 2, BatchSize = 4, NumGenerations = 2, MaxNewTokens = 3, SaveRollouts = true })
        { PromptColumns = columns, WriteTensorBoard = false })
            trainer.Train();
        var rollouts = CommandFixtures.ReadJsonl(Path.Combine(outDir, OnlineRlTrainer.RolloutsFile));
        Assert.Equal(8, rollouts.Count);
        foreach (var row in rollouts)
            Assert.Equal(Array.IndexOf(prompts, row["prompt"]!.GetValue<string>()) + 1, row["score"]!.GetValue<double>(), 6);

        using var again = new OnlineRlTrainer(policy, reference, null, new ByteTokenizer(), reward, prompts,
            OnlineRlOptions.Grpo with { OutputDir = Path.Combine(tmp.Path, "none"), Steps = 1, BatchSize = 4, NumGenerations = 2, MaxNewTokens = 3 });
        var ex = Assert.Throws<FineAlignException>(() => again.Train());
        Assert.Contains("'solution'", ex.Message);
    }

    [Fact]
    public void AMissingOrUnusableColumnIsAOneLineErrorNamingFileLineAndField()
    {
        using var tmp = TestPaths.NewTempDir();
        string modelDir = CommandFixtures.SaveByteModel(Path.Combine(tmp.Path, "model"));
        string prompts = Path.Combine(tmp.Path, "p.jsonl");
        CommandFixtures.WriteLines(prompts, "{\"prompt\": \"2+2?\", \"solution\": \"4\"}", "{\"prompt\": \"3+3?\", \"answer\": \"6\"}");
        string outDir = Path.Combine(tmp.Path, "grpo");
        string[] Args(string spec, string file) => ["grpo", "--policy", modelDir, "--prompts", file, "--out", outDir, "--steps", "1",
            "--batch-size", "2", "--num-generations", "2", "--max-new-tokens", "3", "--threads", "1", "--reward", spec];
        var (code, _, err) = CliRunner.Run(Args("numeric:solution", prompts));
        Assert.Equal(1, code);
        Assert.Contains($"{prompts}:2: field 'solution': missing; --reward numeric:solution reads this column", err);
        Assert.Single(CliRunner.Lines(err));
        Assert.False(Directory.Exists(outDir));   // refused before any output

        string words = Path.Combine(tmp.Path, "w.jsonl");
        CommandFixtures.WriteLines(words, "{\"prompt\": \"2+2?\", \"solution\": \"four\"}");
        var (code2, _, err2) = CliRunner.Run(Args("numeric:solution", words));
        Assert.Equal(1, code2);
        Assert.Contains($"{words}:1: field 'solution': holds no number", err2);

        var (bon, _, bonErr) = CliRunner.Run("bon", "--model", modelDir, "--prompts", prompts, "--reward", "exact-match:solution", "--max-new-tokens", "3");
        Assert.Equal(1, bon);
        Assert.Contains($"{prompts}:2: field 'solution'", bonErr);
        var (corpus, _, corpusErr) = CliRunner.Run("bon", "--model", modelDir, "--reward", "exact-match:solution", "--max-new-tokens", "3");
        Assert.Equal(1, corpus);
        Assert.Contains("give --prompts FILE", corpusErr);
    }

    [Fact]
    public void BestOfNHandsEachCandidateItsPromptsColumnsAcrossChunks()
    {
        using var tmp = TestPaths.NewTempDir();
        string modelDir = CommandFixtures.SaveByteModel(Path.Combine(tmp.Path, "model"));
        using var model = ModelIO.Load(modelDir);
        var columns = new[] { "1", "2", "3" }.Select(v => (IReadOnlyDictionary<string, string>)new Dictionary<string, string> { ["solution"] = v }).ToList();
        var reward = ProgrammaticRewardSource.Sequence("sol", e => double.Parse(e.Columns!["solution"]), ["solution"]);
        // maxRows 2 with n = 2: one prompt per call, three calls.
        var picked = BestOfN.Generate(new FineAlign.Generation.LocalRolloutEngine(model), new ByteTokenizer(), ["a", "b", "c"], reward, 2,
            new FineAlign.Generation.GenerationOptions { MaxNewTokens = 3, Seed = 1 }, maxRows: 2, columns: columns);
        Assert.Equal(new[] { new[] { 1.0, 1.0 }, [2.0, 2.0], [3.0, 3.0] }, picked.Select(p => p.CandidateRewards));
    }

    [Fact]
    public void BonAndEvalPolicyScoreWithTheColumn()
    {
        using var tmp = TestPaths.NewTempDir();
        string modelDir = CommandFixtures.SaveByteModel(Path.Combine(tmp.Path, "model"));
        string prompts = Path.Combine(tmp.Path, "p.jsonl");
        // Every response is "right" for exact-match on an empty-ish answer only by chance; a numeric answer nobody writes scores 0.
        CommandFixtures.WriteLines(prompts, "{\"prompt\": \"a\", \"solution\": \"#### 123456789\"}", "{\"prompt\": \"b\", \"solution\": \"987654321\"}");
        string outFile = Path.Combine(tmp.Path, "bon.jsonl");
        var (code, stdout, err) = CliRunner.Run("bon", "--model", modelDir, "--prompts", prompts, "--reward", "numeric:solution", "--n", "2",
            "--max-new-tokens", "4", "--threads", "1", "--out", outFile);
        Assert.True(code == 0, err + stdout);
        Assert.All(CommandFixtures.ReadJsonl(outFile), row => Assert.Equal(0, row["reward"]!.GetValue<double>()));
        string json = Path.Combine(tmp.Path, "eval.json");
        var (e, eout, eerr) = CliRunner.Run("eval-policy", "--model", modelDir, "--base", modelDir, "--prompts", prompts, "--reward", "numeric:solution",
            "--max-new-tokens", "4", "--threads", "1", "--output", json);
        Assert.True(e == 0, eerr + eout);
        Assert.Equal(0, JsonNode.Parse(File.ReadAllText(json))!["metrics"]!["reward"]!.GetValue<double>());
    }
}
