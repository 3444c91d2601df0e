using System.CommandLine;
using FineAlign.Cli;

namespace FineAlign.Tests.Cli;

/// <summary>The CLI's shared flag groups: every command that runs torch takes --threads; ppo, grpo and rloo share one option set.</summary>
public class SharedFlagsTests
{
    private static readonly string[] WithoutTorch = ["version", "corpus", "tokenize", "template", "tokenizer", "folds", "imdb-prepare"]; // print a version / write text / tokenise / render chat templates / train a BPE tokenizer / split a file into folds / split review files: no tensor work

    private static IEnumerable<Command> Commands() => CliApp.BuildRootCommand().Subcommands;

    private static HashSet<string> OptionNames(Command c) => c.Options.Select(o => o.Name).ToHashSet();

    [Fact]
    public void EveryTorchCommandTakesThreads()
    {
        var missing = Commands().Where(c => !WithoutTorch.Contains(c.Name) && !OptionNames(c).Contains("--threads")).Select(c => c.Name).ToList();
        Assert.True(missing.Count == 0, "commands without --threads: " + string.Join(", ", missing));
    }

    [Fact]
    public void OnlineRlCommandsShareOneOptionSet()
    {
        var byName = Commands().ToDictionary(c => c.Name);
        var ppo = OptionNames(byName["ppo"]);
        Assert.Equal(ppo.OrderBy(x => x), OptionNames(byName["grpo"]).OrderBy(x => x));
        Assert.Equal(ppo.OrderBy(x => x), OptionNames(byName["rloo"]).OrderBy(x => x));
        foreach (var lostOnce in new[] { "--save-total-limit", "--max-prompt-length", "--pivot-window", "--pivot-min-length", "--num-generations", "--advantage", "--eval-prompts" })
            Assert.Contains(lostOnce, ppo);
    }
}
