using System.Text.Json;
using FineAlign.Models;
using FineAlign.Tests.Cli;
using FineAlign.Tests.Support;
using FineAlign.Text;

namespace FineAlign.Tests.Evaluation;

/// <summary>ppo/grpo --eval-prompts FILE --eval-steps N: eval/* metrics with eval-policy's definitions, at the due steps.</summary>
[Collection("Serial torch RNG")]
public class OnlineRlHeldOutEvalTests
{
    private static List<Dictionary<string, double>> ReadMetrics(string run) =>
        File.ReadAllLines(Path.Combine(run, "metrics.jsonl")).Where(l => l.Length > 0)
            .Select(l => JsonSerializer.Deserialize<Dictionary<string, JsonElement>>(l)!
                .Where(kv => kv.Value.ValueKind == JsonValueKind.Number).ToDictionary(kv => kv.Key, kv => kv.Value.GetDouble()))
            .ToList();

    private static int[] EvalSteps(List<Dictionary<string, double>> lines) =>
        lines.Where(l => l.ContainsKey("eval/reward")).Select(l => (int)l["step"]).ToArray();

    [Fact]
    public void PpoAndGrpoLogEvalMetricsAtDueStepsMatchingEvalPolicy()
    {
        using var dir = TestPaths.NewTempDir();
        string b = CommandFixtures.SaveByteModel(Path.Combine(dir.Path, "base"), seed: 11);
        string rm = Path.Combine(dir.Path, "rm");
        using (var trunk = ModelIO.Load(b))
        using (var scored = new ScoredLM(trunk, HeadKind.Sequence, 1, seed: 5))
            scored.Save(rm, new ByteTokenizer());
        string train = Path.Combine(dir.Path, "train.jsonl"), held = Path.Combine(dir.Path, "held.jsonl");
        CommandFixtures.WriteLines(train, "{\"prompt\": \"Hi\"}", "{\"prompt\": \"Yes\"}", "{\"prompt\": \"No\"}", "{\"prompt\": \"Ok\"}");
        CommandFixtures.WriteLines(held, "{\"prompt\": \"Q: 2+2?\\nA:\"}", "{\"prompt\": \"Hello\"}", "{\"prompt\": \"Tell me a story.\"}");

        string ppo = Path.Combine(dir.Path, "ppo");
        var (code, output, err) = CliRunner.Run("ppo", "--policy", b, "--prompts", train, "--reward", "lexicon", "--eval-prompts", held,
            "--eval-steps", "1", "--eval-reward", "rm:" + rm, "--steps", "2", "--batch-size", "2", "--mini-batch-size", "2",
            "--max-new-tokens", "4", "--out", ppo, "--threads", "1");
        Assert.True(code == 0, err + output);
        var lines = ReadMetrics(ppo);
        Assert.Equal([0, 1, 2], EvalSteps(lines));
        foreach (var key in new[] { "eval/reward", "eval/reward_se", "eval/kl", "eval/base_logprob_per_token", "eval/distinct_1", "eval/distinct_2", "eval/mean_length" })
            Assert.All(lines, l => Assert.True(l.ContainsKey(key), $"step {l["step"]} lacks {key}"));
        Assert.Equal(0.0, lines[0]["eval/kl"], 6);            // step 0: the policy is the reference
        Assert.True(Directory.Exists(Path.Combine(ppo, "runs")));   // TensorBoard gets them like the others

        // Step 0 is the initial model: eval-policy on it with the same prompts, reward, length and seed gives the same numbers.
        string json = Path.Combine(dir.Path, "eval.json");
        var (code2, out2, err2) = CliRunner.Run("eval-policy", "--model", b, "--base", b, "--prompts", held, "--reward", "rm:" + rm,
            "--max-new-tokens", "4", "--output", json, "--threads", "1");
        Assert.True(code2 == 0, err2 + out2);
        var reference = JsonDocument.Parse(File.ReadAllText(json)).RootElement.GetProperty("metrics");
        foreach (var name in new[] { "reward", "reward_se", "kl", "base_logprob_per_token", "distinct_1", "distinct_2", "mean_length" })
            Assert.Equal(reference.GetProperty(name).GetDouble(), lines[0]["eval/" + name], 5);

        // grpo, eval every 2 of 3 steps, the run's own --reward: steps 0, 2 and the end (3); step 1 has no eval/*.
        string grpo = Path.Combine(dir.Path, "grpo");
        var (code3, out3, err3) = CliRunner.Run("grpo", "--policy", b, "--prompts", train, "--reward", "rm:" + rm, "--eval-prompts", held,
            "--eval-steps", "2", "--steps", "3", "--batch-size", "4", "--num-generations", "2", "--max-new-tokens", "4", "--out", grpo, "--threads", "1");
        Assert.True(code3 == 0, err3 + out3);
        var g = ReadMetrics(grpo);
        Assert.Equal([0, 2, 3], EvalSteps(g));
        Assert.Equal(lines[0]["eval/reward"], g[0]["eval/reward"], 5);   // same initial model, prompts, reward and seed
        Assert.Contains(g, l => l["step"] == 1 && l.ContainsKey("reward") && !l.ContainsKey("eval/reward"));

        // An integer keeps meaning a count of built-in corpus prompts, refused with --prompts.
        var (code4, _, err4) = CliRunner.Run("grpo", "--policy", b, "--prompts", train, "--eval-prompts", "3", "--out", Path.Combine(dir.Path, "x"));
        Assert.Equal(1, code4);
        Assert.Contains("built-in corpus", err4);
    }
}
