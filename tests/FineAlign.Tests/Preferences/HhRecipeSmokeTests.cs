using FineAlign.Models;
using FineAlign.Tests.Cli;
using FineAlign.Tests.Support;
using FineAlign.Text;
using FineAlign.Training;

namespace FineAlign.Tests.Preferences;

/// <summary>CI-sized version of the HH-RLHF proof: the example recipes run on real lines with a tiny model.</summary>
[Collection("Serial torch RNG")]
public class HhRecipeSmokeTests
{
    [Fact]
    public void HhRecipesRunOnRealPairsWithAHeldOutTail()
    {
        string hh = TestPaths.RequireShared("data/hh-rlhf-harmless/harmless-base-2000.jsonl");
        using var dir = TestPaths.NewTempDir();
        string data = Path.Combine(dir.Path, "hh-40.jsonl");
        File.WriteAllLines(data, File.ReadLines(hh).Take(40));
        string model = Path.Combine(dir.Path, "base");
        var tok = new ByteTokenizer();
        using (var m = ModelFactory.Create(ModelPresets.Create("tiny", tok, 128), 1)) ModelIO.Save(m, model, tok);

        string[] Tiny(string command, string recipe, string run) =>
        [
            command, "--config", Path.Combine(TestPaths.RepoRoot, "examples", recipe), "--data", data, "--model", model, "--out", run,
            "--holdout-last", "10", "--max-length", "128", "--max-prompt-length", "64", "--max-steps", "2", "--batch-size", "4",
            "--eval-batch-size", "10", "--threads", "1",
        ];
        string rm = Path.Combine(dir.Path, "rm"), dpo = Path.Combine(dir.Path, "dpo");
        var (c1, o1, e1) = CliRunner.Run(Tiny("rm", "hh-rm.yaml", rm));
        Assert.True(c1 == 0, e1 + o1);
        Assert.Contains("for training, 10 held out", o1);
        Assert.Contains(MetricsLogger.Read(Path.Combine(rm, MetricsLogger.JsonlFile)), e => e.ContainsKey("eval/accuracy"));
        var (c2, o2, e2) = CliRunner.Run(Tiny("dpo", "hh-dpo.yaml", dpo));
        Assert.True(c2 == 0, e2 + o2);
        Assert.True(File.Exists(Path.Combine(dpo, "reference_logps_eval.json")));
        var (c3, o3, e3) = CliRunner.Run("eval-rm", "--model", Path.Combine(rm, "model"), "--data", data, "--holdout-last", "10",
                                         "--max-length", "128", "--max-prompt-length", "64");
        Assert.True(c3 == 0, e3);
        Assert.Contains("on 10 pairs", o3);
    }
}
