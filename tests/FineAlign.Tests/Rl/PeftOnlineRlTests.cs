using System.Security.Cryptography;
using System.Text.Json.Nodes;
using FineAlign.Models;
using FineAlign.Tests.Cli;
using FineAlign.Tests.Support;
using FineAlign.Text;
using FineAlign.Trainers;

namespace FineAlign.Tests.Rl;

/// <summary>
/// ppo and grpo with --use-peft (issue #15): the policy is the base plus LoRA adapters, the reference is the same base
/// with the adapters off (so the KL is exactly 0 until the adapters move), PPO's value head sits on the policy's trunk,
/// the base folder is never written, outputs and checkpoints are PEFT adapter folders, and --resume continues the
/// identical curve.
/// </summary>
[Collection("Serial torch RNG")]
public class PeftOnlineRlTests
{
    private static readonly string[] LoraFlags = ["--use-peft", "--lora-r", "2", "--lora-alpha", "4", "--learning-rate", "3e-2", "--threads", "1", "--corpus-size", "60"];

    public static TheoryData<string, string[]> Runs => new()
    {
        { "ppo", ["ppo", "--batch-size", "4", "--mini-batch-size", "2", "--ppo-epochs", "2", "--max-new-tokens", "8", "--kl-coef", "0.05"] },
        // bf16 base (stored and loaded in bf16), fp32 adapters and the fp32 value head on the bf16 trunk.
        { "ppo_bf16", ["ppo", "--batch-size", "4", "--mini-batch-size", "2", "--ppo-epochs", "2", "--max-new-tokens", "8", "--kl-coef", "0.05", "--bf16"] },
        { "grpo", ["grpo", "--batch-size", "4", "--num-generations", "2", "--mini-batch-size", "2", "--num-iterations", "2", "--max-new-tokens", "8", "--beta", "0.04"] },
    };

    [Theory]
    [MemberData(nameof(Runs))]
    public void Lora_run_keeps_the_base_as_reference_saves_adapters_and_resumes_identically(string name, string[] args)
    {
        using var tmp = TestPaths.NewTempDir();
        string policy = CommandFixtures.SaveByteModel(Path.Combine(tmp.Path, "policy"));
        string rm = Path.Combine(tmp.Path, "rm");
        var config = ModelConfig.Load(Path.Combine(policy, "config.json"));
        using (var m = new ScoredLM(ModelFactory.Create(config, 5), HeadKind.Sequence, 1, 5)) m.Save(rm, new ByteTokenizer());
        string baseHash = Hash(Path.Combine(policy, "model.safetensors"));
        string[] common = [args[0], "--policy", policy, "--reward", $"rm:{rm}", "--save-steps", "1", .. args[1..], .. LoraFlags];
        string a = Path.Combine(tmp.Path, "a"), b = Path.Combine(tmp.Path, "b");

        var (code, stdout, err) = CliRunner.Run([.. common, "--out", a, "--steps", "3"]);
        Assert.True(code == 0, err + stdout);
        var ma = Lines(a);
        Assert.Equal(3, ma.Count);
        bool ppo = args[0] == "ppo";
        string kl = ppo ? "objective/kl" : "kl";
        // Step 1 samples from the untrained adapters (B = 0): policy = reference to the last bit.
        Assert.Equal(0.0, ma[0][kl]!.GetValue<double>());
        Assert.True(Math.Abs(ma[2][kl]!.GetValue<double>()) > 0, $"{name}: the adapters did not move the policy away from the base");
        // PEFT folders only; the base is never written; PPO's value head is on the policy trunk.
        foreach (var folder in new[] { Path.Combine(a, OnlineRlTrainer.ModelFolder), Path.Combine(a, "checkpoint-3", OnlineRlTrainer.ModelFolder) })
        {
            Assert.True(FineAlign.Models.Lora.IsAdapterFolder(folder), folder);
            Assert.False(File.Exists(Path.Combine(folder, "model.safetensors")), folder);
        }
        Assert.Equal(ppo, File.Exists(Path.Combine(a, OnlineRlTrainer.ValueFolder, ValueModel.HeadFile)));
        Assert.Equal(baseHash, Hash(Path.Combine(policy, "model.safetensors")));

        // Stop after step 1, resume to 3: the same numbers, every field but the wall clock.
        Assert.Equal(0, CliRunner.Run([.. common, "--out", b, "--steps", "1"]).Code);
        (code, stdout, err) = CliRunner.Run([.. common, "--out", b, "--steps", "3", "--resume", "true"]);
        Assert.True(code == 0, err + stdout);
        var mb = Lines(b);
        Assert.Equal(ma.Count, mb.Count);
        for (int i = 0; i < ma.Count; i++)
            foreach (var (key, value) in ma[i])
                if (key != "eps") Assert.True(value!.ToJsonString() == mb[i][key]?.ToJsonString(), $"{name} step {i + 1} '{key}': {value.ToJsonString()} vs {mb[i][key]?.ToJsonString()}");
    }

    private static List<JsonObject> Lines(string dir) =>
        CliRunner.Lines(File.ReadAllText(Path.Combine(dir, "metrics.jsonl"))).Select(l => (JsonObject)JsonNode.Parse(l)!).ToList();

    private static string Hash(string file) => Convert.ToHexString(SHA256.HashData(File.ReadAllBytes(file)));
}
