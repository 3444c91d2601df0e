namespace FineAlign.Tests.Cli;

public class ModelCommandsHelpTests
{
    [Fact]
    public void Root_help_lists_the_model_commands_and_each_shows_defaults()
    {
        var root = CliRunner.Run("--help");
        Assert.Equal(0, root.Code);
        foreach (var name in new[] { "generate", "logprobs", "convert" })
            Assert.Contains("\n  " + name + " ", root.Out);

        var gen = CliRunner.Run("generate", "--help");
        Assert.Contains("--max-new-tokens", gen.Out);
        Assert.Contains("[default: 64]", gen.Out);
        Assert.Contains("--chat-template", gen.Out);
        var lp = CliRunner.Run("logprobs", "--help");
        Assert.Contains("--over-length <error|truncate>", lp.Out);
        var conv = CliRunner.Run("convert", "--help");
        Assert.Contains("[default: 5GB]", conv.Out);
    }
}
