using FineAlign.Cli;
using FineAlign.Tests.Support;

namespace FineAlign.Tests.Cli;

public class CliAppTests
{
    [Fact]
    public void Help_lists_options_with_descriptions_and_defaults()
    {
        var (code, output, _) = CliRunner.Run("corpus", "--help");
        Assert.Equal(0, code);
        Assert.Contains("Write the built-in synthetic movie-review corpus", output);
        foreach (var expected in new[] { "--out", "-o", "Output folder", "--seed", "Random seed", "[default: 1234]",
                                         "--count", "[default: 20000]", "--eval-fraction", "--config", "recipe.yaml", "snake_case" })
            Assert.Contains(expected, output);

        (code, output, _) = CliRunner.Run("--help");
        Assert.Equal(0, code);
        Assert.Contains("corpus", output);
        Assert.Contains("version", output);
        Assert.Contains("--verbose", output);

        // Bare `finealign` shows help too.
        (code, output, _) = CliRunner.Run();
        Assert.Equal(0, code);
        Assert.Contains("Usage:", output);
    }

    [Fact]
    public void Missing_config_file_is_one_line_error_exit_1()
    {
        var (code, output, err) = CliRunner.Run("corpus", "--config", "no/such/recipe.yaml", "--count", "5");
        Assert.Equal(1, code);
        Assert.Equal("", output);
        Assert.Equal("error: config file not found: no/such/recipe.yaml\n", err);
    }

    [Fact]
    public void Unknown_yaml_key_for_corpus_suggests_the_option()
    {
        using var tmp = TestPaths.NewTempDir();
        string yaml = Path.Combine(tmp.Path, "c.yaml");
        File.WriteAllText(yaml, "cont: 5\n");
        var (code, _, err) = CliRunner.Run("corpus", "--config", yaml, "--out", Path.Combine(tmp.Path, "o"));
        Assert.Equal(1, code);
        Assert.Equal($"error: {yaml}:1: unknown key 'cont' for 'finealign corpus' (did you mean 'count'?)\n", err);
        Assert.False(Directory.Exists(Path.Combine(tmp.Path, "o")));
    }

    [Fact]
    public void Usage_errors_exit_2_with_hint()
    {
        var (code, _, err) = CliRunner.Run("corpus", "--seed", "abc");
        Assert.Equal(2, code);
        var lines = CliRunner.Lines(err);
        Assert.StartsWith("error: ", lines[0]);
        Assert.Contains("abc", lines[0]);
        Assert.Equal("Run 'finealign corpus --help' for usage.", lines[^1]);

        (code, _, err) = CliRunner.Run("corpsu");
        Assert.Equal(2, code);
        Assert.Contains("Did you mean 'corpus'?", err);

        (code, _, err) = CliRunner.Run("corpus", "--count", "0");
        Assert.Equal(2, code);
        Assert.Equal("error: option --count: must be between 1 and 10000000, got 0\n", err);
    }

    [Fact]
    public void Unexpected_errors_hide_the_stack_trace_unless_verbose()
    {
        Exception thrown;
        try { throw new InvalidOperationException("boom\nsecond line"); }
        catch (Exception ex) { thrown = ex; }

        var quiet = new StringWriter();
        Assert.Equal(1, CliApp.ReportException(thrown, quiet, verbose: false));
        Assert.Equal("error: unexpected InvalidOperationException: boom second line (run with --verbose or FINEALIGN_DEBUG=1 for the stack trace)",
            quiet.ToString().Trim());

        var loud = new StringWriter();
        CliApp.ReportException(thrown, loud, verbose: true);
        Assert.Contains("   at ", loud.ToString());

        var user = new StringWriter();
        Assert.Equal(1, CliApp.ReportException(new FileNotFoundException("Could not find file 'x.bin'."), user, verbose: false));
        Assert.Equal("error: Could not find file 'x.bin'.", user.ToString().Trim());
    }

    [Fact]
    public void Version_command_and_option()
    {
        var (code, output, _) = CliRunner.Run("version");
        Assert.Equal(0, code);
        Assert.StartsWith("finealign " + CliApp.Version, output);
        Assert.Contains("TorchSharp 0.107", output);

        (code, output, _) = CliRunner.Run("--version");
        Assert.Equal(0, code);
        Assert.Equal(CliApp.Version, output.Trim());
    }
}
