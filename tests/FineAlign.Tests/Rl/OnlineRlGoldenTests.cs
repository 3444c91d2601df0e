using System.Text.Json.Nodes;
using FineAlign.Models;
using FineAlign.Tests.Cli;
using FineAlign.Text;
using FineAlign.Tests.Support;

namespace FineAlign.Tests.Rl;

/// <summary>
/// The online-RL presets (ppo, grpo, rloo, reinforce++) against curves recorded from the code before the
/// engine refactor (issue #12): same command, same seed → the same metrics.jsonl, compared number by number
/// (every field but the wall-clock <c>eps</c>). A deliberate change to a formula re-records its golden file
/// (FINEALIGN_RECORD_GOLDEN=1) and says so in the commit.
/// </summary>
[Collection("Serial torch RNG")]
public class OnlineRlGoldenTests
{
    private static readonly string[] PpoSmall =
        ["--batch-size", "4", "--mini-batch-size", "2", "--ppo-epochs", "2", "--max-new-tokens", "10", "--corpus-size", "60", "--threads", "1", "--steps", "3"];
    private static readonly string[] GroupSmall =
        ["--batch-size", "4", "--num-generations", "2", "--mini-batch-size", "2", "--num-iterations", "2", "--max-new-tokens", "10",
         "--corpus-size", "60", "--threads", "1", "--steps", "3"];

    public static TheoryData<string, string[]> Runs => new()
    {
        // RM and TLCR: random reward models, so the tiny random policy gets non-zero rewards (the lexicon would give 0s).
        { "ppo", ["ppo", "--reward", "tlcr:{disc}", "--reward", "rm:{rm}@0.5", .. PpoSmall] },
        { "ppo_shared_adaptive", ["ppo", "--reward", "rm:{rm}", "--shared-trunk", "true", "--kl-target", "0.5", "--kl-estimator", "K3",
                                  "--missing-eos-penalty", "1", .. PpoSmall] },
        { "grpo", ["grpo", "--reward", "rm:{rm}", "--reward", "tlcr:{disc}@0.5", "--beta", "0.04", .. GroupSmall] },
        { "grpo_dr", ["grpo", "--reward", "rm:{rm}", "--loss-type", "dr_grpo", "--scale-rewards", "none", .. GroupSmall] },
        { "rloo", ["rloo", "--reward", "tlcr:{disc}", "--reward", "lexicon", "--loss-type", "token", .. GroupSmall] },
        { "reinforce_pp", ["grpo", "--advantage", "reinforce++", "--reward", "tlcr:{disc}", "--kl-coef", "0.05", .. GroupSmall] },
    };

    [Theory]
    [MemberData(nameof(Runs))]
    public void SameCommandGivesTheRecordedCurve(string name, string[] args)
    {
        using var tmp = TestPaths.NewTempDir();
        string policy = CommandFixtures.SaveByteModel(Path.Combine(tmp.Path, "policy"));
        string outDir = Path.Combine(tmp.Path, "out"), rm = Path.Combine(tmp.Path, "rm"), disc = Path.Combine(tmp.Path, "disc");
        var config = ModelConfig.Load(Path.Combine(policy, "config.json"));
        using (var m = new ScoredLM(ModelFactory.Create(config, 5), HeadKind.Sequence, 1, 5)) m.Save(rm, new ByteTokenizer());
        using (var m = new ScoredLM(ModelFactory.Create(config, 6), HeadKind.Token, 2, 6)) m.Save(disc, new ByteTokenizer());
        var filled = args.Select(a => a.Replace("{rm}", rm).Replace("{disc}", disc)).ToArray();
        var (code, stdout, err) = CliRunner.Run([filled[0], "--policy", policy, "--out", outDir, .. filled[1..]]);
        Assert.True(code == 0, err + stdout);
        string actual = Canonical(File.ReadAllText(Path.Combine(outDir, "metrics.jsonl")));
        string golden = Path.Combine(TestPaths.RepoRoot, "tests", "FineAlign.Tests", "Rl", "Golden", name + ".jsonl");
        if (Environment.GetEnvironmentVariable("FINEALIGN_RECORD_GOLDEN") == "1")
        {
            File.WriteAllText(golden, actual);
            return;
        }
        Assert.True(File.Exists(golden), $"{golden} is missing; record it with FINEALIGN_RECORD_GOLDEN=1");
        var expected = CliRunner.Lines(File.ReadAllText(golden));
        var got = CliRunner.Lines(actual);
        Assert.Equal(expected.Length, got.Length);
        for (int i = 0; i < expected.Length; i++)
        {
            var e = (JsonObject)JsonNode.Parse(expected[i])!;
            var g = (JsonObject)JsonNode.Parse(got[i])!;
            Assert.Equal(e.Select(kv => kv.Key).OrderBy(k => k, StringComparer.Ordinal), g.Select(kv => kv.Key).OrderBy(k => k, StringComparer.Ordinal));
            foreach (var (key, value) in e)
                Assert.True(value!.ToJsonString() == g[key]!.ToJsonString(),
                    $"{name} line {i + 1} '{key}': recorded {value.ToJsonString()}, now {g[key]!.ToJsonString()}");
        }
    }

    /// <summary>metrics.jsonl without the wall-clock field.</summary>
    private static string Canonical(string jsonl) => string.Concat(CliRunner.Lines(jsonl).Select(l =>
    {
        var o = (JsonObject)JsonNode.Parse(l)!;
        o.Remove("eps");
        return o.ToJsonString() + "\n";
    }));
}
