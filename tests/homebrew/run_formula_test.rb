# Runs the `test do` block of a Homebrew formula against an mlxk installed elsewhere (no Homebrew):
#   ruby run_formula_test.rb FORMULA.rb BIN_DIR VERSION
# Just enough of Homebrew's formula DSL is stood in for here (the class-level declarations are
# recorded and ignored; shell_output, testpath, bin, version and the assertions behave as in
# Homebrew), so that the block's own logic runs against the real mlxk.
require "json"
require "minitest"
require "open3"
require "pathname"
require "tmpdir"

module Language
  module Python
    module Virtualenv; end
  end
end

class Formula
  include Minitest::Assertions
  attr_accessor :assertions

  class << self
    attr_reader :test_block

    def test(&block)
      @test_block = block
    end

    def resource(_name, &_block); end

    def method_missing(_name, *_args, &_block); end

    def respond_to_missing?(*)
      true
    end
  end

  def initialize(bin, version, testpath)
    @bin = Pathname(bin)
    @version = version
    @testpath = Pathname(testpath)
    @assertions = 0
  end

  attr_reader :bin, :version, :testpath

  def shell_output(cmd, result = 0)
    output, status = Open3.capture2(cmd)
    assert_equal result, status.exitstatus, "#{cmd} exited #{status.exitstatus}:\n#{output}"
    output
  end
end

class Pathname
  def write(content)
    File.write(self, content)
  end

  def binwrite(content)
    File.binwrite(self, content)
  end

  def mkpath
    FileUtils.mkdir_p(self)
  end
end

formula_file, bin_dir, version = ARGV
bin_dir = File.expand_path(bin_dir)
load formula_file
klass = Object.const_get(File.basename(formula_file, ".rb").capitalize)
Dir.mktmpdir("formula-test-") do |dir|
  Dir.chdir(dir) do
    formula = klass.new(bin_dir, version, dir)
    formula.instance_eval(&klass.test_block)
    puts "formula test passed (#{formula.assertions} assertions)"
  end
end
