using FineAlign.Models;
using FineAlign.Tests.Cli;
using FineAlign.Tests.Support;
using FineAlign.Text;
using FineAlign.Training;

namespace FineAlign.Tests.Preferences;

/// <summary>
/// CI-sized version of the HH-RLHF proof: every examples/hh-*.yaml recipe runs through the real CLI on 40 real
/// lines with a tiny model (the recipe's own settings, except model size, steps and batch sizes).
/// </summary>
[Collection("Serial torch RNG")]
public class HhRecipeSmokeTests
{
    [Fact]
    public void EveryHhRecipeRunsOnRealLinesWithAHeldOutTail()
    {
        string hh = TestPaths.RequireShared("data/hh-rlhf-harmless/harmless-base-2000.jsonl");
        using var dir = TestPaths.NewTempDir();
        string data = Path.Combine(dir.Path, "hh-40.jsonl");
        File.WriteAllLines(data, File.ReadLines(hh).Take(40));
        string model = Path.Combine(dir.Path, "base");
        var tok = new ByteTokenizer();
        using (var m = ModelFactory.Create(ModelPresets.Create("tiny", tok, 128), 1)) ModelIO.Save(m, model, tok);
        var ran = new HashSet<string>();

        string Recipe(string name) { ran.Add(name); return Path.Combine(TestPaths.RepoRoot, "examples", name); }
        string[] Tiny(string command, string recipe, string run) =>
        [
            command, "--config", Recipe(recipe), "--data", data, "--model", model, "--out", run,
            "--holdout-last", "10", "--max-length", "128", "--max-prompt-length", "64", "--max-steps", "2", "--batch-size", "4",
            "--eval-batch-size", "10", "--threads", "1",
        ];
        static List<Dictionary<string, double>> Metrics(string run) => MetricsLogger.Read(Path.Combine(run, MetricsLogger.JsonlFile));

        // Reward model: 30 training pairs (one of the first 30 lines has a blank reply and is skipped), 10 held out.
        string rm = Path.Combine(dir.Path, "rm");
        var (c1, o1, e1) = CliRunner.Run(Tiny("rm", "hh-rm.yaml", rm));
        Assert.True(c1 == 0, e1 + o1);
        Assert.Contains("for training, 10 held out", o1);
        Assert.Contains(Metrics(rm), e => e.ContainsKey("eval/accuracy"));
        var (c2, o2, e2) = CliRunner.Run("eval-rm", "--model", Path.Combine(rm, "model"), "--data", data, "--holdout-last", "10",
                                         "--max-length", "128", "--max-prompt-length", "64");
        Assert.True(c2 == 0, e2);
        Assert.Contains("on 10 pairs", o2);

        string dpo = Path.Combine(dir.Path, "dpo");
        var (c3, o3, e3) = CliRunner.Run(Tiny("dpo", "hh-dpo.yaml", dpo));
        Assert.True(c3 == 0, e3 + o3);
        Assert.True(File.Exists(Path.Combine(dpo, "reference_logps_eval.json")));
        Assert.Contains(Metrics(dpo), e => e.ContainsKey("eval/rewards/accuracies"));

        // KTO/BCO read the pairs as unpaired feedback: each held-out pair gives one thumbs-up and one thumbs-down.
        foreach (var (command, recipe, key) in new[] { ("kto", "hh-kto.yaml", "kl"), ("bco", "hh-bco.yaml", "delta") })
        {
            string run = Path.Combine(dir.Path, command);
            var (c, o, e) = CliRunner.Run(Tiny(command, recipe, run));
            Assert.True(c == 0, e + o);
            Assert.Contains("20 held out", o);
            var metrics = Metrics(run);
            Assert.Contains(metrics, m => m.ContainsKey(key));
            Assert.Contains(metrics, m => m.ContainsKey("eval/rewards/chosen"));
            Assert.True(File.Exists(Path.Combine(run, "model", "config.json")), command);
        }

        // PPO: the HH file itself as prompts (implicit prompt), scored by the reward model above.
        string ppo = Path.Combine(dir.Path, "ppo");
        var (c4, o4, e4) = CliRunner.Run("ppo", "--config", Recipe("hh-ppo.yaml"), "--prompts", data, "--policy", model,
            "--reward", "rm:" + Path.Combine(rm, "model"), "--out", ppo, "--max-steps", "2", "--batch-size", "4", "--mini-batch-size", "2",
            "--ppo-epochs", "1", "--max-new-tokens", "8", "--threads", "1");
        Assert.True(c4 == 0, e4 + o4);
        Assert.Contains("40 prompts", o4);
        Assert.Contains("prompts longer than --max-prompt-length 64 tokens: kept their end", e4);
        var ppoMetrics = Metrics(ppo);
        Assert.Equal(2, ppoMetrics.Count(m => m.ContainsKey("objective/scores")));
        Assert.True(File.Exists(Path.Combine(ppo, "model", "config.json"))); // every trainer writes model/ (issue #12)

        // A new examples/hh-*.yaml must be added here.
        var recipes = Directory.GetFiles(Path.Combine(TestPaths.RepoRoot, "examples"), "hh-*.yaml").Select(Path.GetFileName).Order();
        Assert.Equal(recipes, ran.Order());
    }
}
